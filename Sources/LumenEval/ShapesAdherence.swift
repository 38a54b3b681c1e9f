import Foundation
import Lumen

/// Prompt adherence of shapes-world images by counting pixels, no learned model: the Swift port of
/// tools/adherence.py (whose header explains each step), held to that module's parses by
/// `AdherenceScorerTests` on recorded fixtures. `lumen eval` and the demo-model test use it.
///
/// Parsing an image: nearest palette colour per pixel; the background is the commonest colour of
/// the 2-pixel border ring; objects are the 4-connected non-background components, largest first,
/// speckle under 12 px (at 64×64) dropped; an object's colour is the commonest colour of its
/// interior; its half-covered pixels give a mask whose 7-number descriptor picks the nearest shape
/// prototype; its extent gives the size word and its box centre the nearest position anchor.
public enum ShapesAdherence {
    static let minArea = 12.0
    static let largeExtent = 23.0

    public struct Object: Sendable, Hashable {
        public var colour: String
        public var kind: String
        public var size: String
        public var position: String
        public var area: Int
        /// x0, y0, x1, y1, inclusive.
        public var box: [Int]
    }

    public struct Parse: Sendable, Hashable {
        public var background: String
        /// Largest first.
        public var objects: [Object]
    }

    /// Attribute groups of a caption, as reported.
    public enum Group: String, CaseIterable, Sendable {
        case colour, background, objectColour = "object colour", shape, size, position
    }

    /// Figures of a prompt set: each group's matched fraction (nil where no caption states it),
    /// the overall fraction, and R-precision.
    public struct Report: Sendable, Equatable {
        public var groups: [String: Double]
        public var overall: Double
        public var rPrecision: Double
        public var count: Int

        public subscript(_ g: Group) -> Double? { groups[g.rawValue] }
    }

    // MARK: parsing

    /// Index of each pixel's nearest palette colour (first on ties).
    static func paletteLabels(_ image: RGBImage) -> [Int] {
        let colours = ShapesWorld.palette.map(\.rgb)
        var out = [Int](repeating: 0, count: image.width * image.height)
        image.pixels.withUnsafeBufferPointer { p in
            for i in 0..<out.count {
                let x = SIMD3<Float>(Float(p[3 * i]), Float(p[3 * i + 1]), Float(p[3 * i + 2]))
                var best = 0
                var bestD = Float.infinity
                for (k, c) in colours.enumerated() {
                    let d = x - c
                    let dd = d.x * d.x + d.y * d.y + d.z * d.z
                    if dd < bestD { bestD = dd; best = k }
                }
                out[i] = best
            }
        }
        return out
    }

    /// The value that occurs most often; among equals, the one seen first.
    static func commonest(_ values: [Int]) -> Int {
        var counts: [Int: Int] = [:]
        var order: [Int] = []
        for v in values {
            if counts[v] == nil { order.append(v) }
            counts[v, default: 0] += 1
        }
        var best = order[0]
        for v in order where counts[v]! > counts[best]! { best = v }
        return best
    }

    /// numpy's median of each channel.
    static func median(_ rgb: [SIMD3<Float>]) -> SIMD3<Float> {
        var out = SIMD3<Float>()
        for c in 0..<3 {
            let v = rgb.map { $0[c] }.sorted()
            let n = v.count
            out[c] = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
        }
        return out
    }

    /// 4-connected components of a mask, as flat pixel indices, largest first (discovery order
    /// among equals; discovery in row-major order of the first pixel).
    static func components(_ mask: [Bool], width w: Int, height h: Int) -> [[Int]] {
        var seen = [Bool](repeating: false, count: mask.count)
        var out: [[Int]] = []
        for start in 0..<mask.count where mask[start] && !seen[start] {
            seen[start] = true
            var stack = [start], pixels: [Int] = []
            while let p = stack.popLast() {
                pixels.append(p)
                let y = p / w, x = p % w
                for (ny, nx) in [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
                where ny >= 0 && ny < h && nx >= 0 && nx < w {
                    let q = ny * w + nx
                    if mask[q] && !seen[q] { seen[q] = true; stack.append(q) }
                }
            }
            out.append(pixels)
        }
        // A stable sort, as Python's.
        return out.enumerated().sorted { a, b in
            a.element.count != b.element.count ? a.element.count > b.element.count : a.offset < b.offset
        }.map(\.element)
    }

    /// A mask cropped to its bounding box.
    struct BoxMask {
        var x0, y0, x1, y1: Int
        var bits: [Bool]
        var width: Int { x1 - x0 + 1 }
        var height: Int { y1 - y0 + 1 }

        init(pixels: [Int], imageWidth w: Int) {
            x0 = Int.max; y0 = Int.max; x1 = Int.min; y1 = Int.min
            for p in pixels {
                x0 = min(x0, p % w); x1 = max(x1, p % w); y0 = min(y0, p / w); y1 = max(y1, p / w)
            }
            bits = [Bool](repeating: false, count: (x1 - x0 + 1) * (y1 - y0 + 1))
            let bw = x1 - x0 + 1
            for p in pixels { bits[(p / w - y0) * bw + (p % w - x0)] = true }
        }

        subscript(y: Int, x: Int) -> Bool { bits[y * width + x] }

        /// The 7-number descriptor: fill, the row widths at 1/4, 1/2, 3/4 of the height and the
        /// column heights at 1/4, 1/2, 3/4 of the width (Python's round: half to even).
        var descriptor: [Float] {
            let h = height, w = width
            func at(_ f: Double, _ n: Int) -> Int { min(n - 1, Int((f * Double(n - 1)).rounded(.toNearestOrEven))) }
            let fill = Double(bits.filter { $0 }.count) / Double(bits.count)
            var d = [Float(fill)]
            for f in [0.25, 0.5, 0.75] {
                let r = at(f, h)
                d.append(Float(Double((0..<w).filter { self[r, $0] }.count) / Double(w)))
            }
            for f in [0.25, 0.5, 0.75] {
                let c = at(f, w)
                d.append(Float(Double((0..<h).filter { self[$0, c] }.count) / Double(h)))
            }
            return d
        }
    }

    static func classifyKind(_ descriptor: [Float]) -> String {
        var best = prototypes[0].kind
        var bestD = Float.infinity
        for p in prototypes {
            var s: Float = 0
            for i in 0..<7 { let d = p.descriptor[i] - descriptor[i]; s += d * d }
            if s < bestD { bestD = s; best = p.kind }
        }
        return best
    }

    /// What an image shows: its background colour and its objects, largest first.
    public static func parse(_ image: RGBImage) -> Parse {
        let w = image.width, h = image.height
        let labels = paletteLabels(image)
        let rgb = (0..<(w * h)).map { i in
            SIMD3<Float>(Float(image.pixels[3 * i]), Float(image.pixels[3 * i + 1]), Float(image.pixels[3 * i + 2]))
        }
        // The 2-pixel ring in the Python scorer's order: top rows, bottom rows, left and right columns.
        var ring: [Int] = []
        for y in 0..<min(2, h) { for x in 0..<w { ring.append(y * w + x) } }
        for y in max(0, h - 2)..<h { for x in 0..<w { ring.append(y * w + x) } }
        if h > 4 {
            for y in 2..<(h - 2) { for x in 0..<min(2, w) { ring.append(y * w + x) } }
            for y in 2..<(h - 2) { for x in max(0, w - 2)..<w { ring.append(y * w + x) } }
        }
        let bg = commonest(ring.map { labels[$0] })
        let bgRGB = median(ring.filter { labels[$0] == bg }.map { rgb[$0] })
        let scale = Double(min(h, w)) / Double(ShapesWorld.referenceSize)
        var objects: [Object] = []
        for comp in components(labels.map { $0 != bg }, width: w, height: h) {
            if Double(comp.count) < minArea * scale * scale { break }
            var m = BoxMask(pixels: comp, imageWidth: w)
            // Interior: pixels whose four neighbours are all in the component.
            var interior: [Int] = []
            for by in 0..<m.height {
                for bx in 0..<m.width where m[by, bx] {
                    let inside = by > 0 && by < m.height - 1 && bx > 0 && bx < m.width - 1
                        && m[by - 1, bx] && m[by + 1, bx] && m[by, bx - 1] && m[by, bx + 1]
                    if inside { interior.append((by + m.y0) * w + bx + m.x0) }
                }
            }
            if interior.isEmpty { interior = comp }  // in discovery order, as the Python scorer takes it
            let colour = commonest(interior.map { labels[$0] })
            // Keep the pixels at least half covered, on the line from the background's colour to the object's.
            let axis = median(interior.map { rgb[$0] }) - bgRGB
            let norm = max((axis * axis).sum(), 1e-6)
            var pixels = comp
            let kept = comp.filter { p in
                let d = rgb[p] - bgRGB
                return (d.x * axis.x + d.y * axis.y + d.z * axis.z) / norm > 0.5
            }
            if Double(kept.count) >= minArea * scale * scale / 2 {
                pixels = kept
                m = BoxMask(pixels: kept, imageWidth: w)
            }
            let extent = Double(max(m.height, m.width)) / scale
            let cx = Double(m.x0 + m.x1 + 1) / 2 / Double(w), cy = Double(m.y0 + m.y1 + 1) / 2 / Double(h)
            var position = ShapesWorld.positions[0].name
            var bestD = Double.infinity
            for p in ShapesWorld.positions {
                let d = (p.x - cx) * (p.x - cx) + (p.y - cy) * (p.y - cy)
                if d < bestD { bestD = d; position = p.name }
            }
            objects.append(Object(colour: ShapesWorld.colourNames[colour], kind: classifyKind(m.descriptor),
                                  size: extent > largeExtent ? "large" : "small", position: position,
                                  area: pixels.count, box: [m.x0, m.y0, m.x1, m.y1]))
        }
        return Parse(background: ShapesWorld.colourNames[bg], objects: objects)
    }

    // MARK: matching and scoring

    /// (matched, stated) per group.
    public typealias Counts = [Group: (matched: Int, stated: Int)]

    static func add(_ a: inout Counts, _ b: Counts) {
        for (k, v) in b {
            let o = a[k] ?? (0, 0)
            a[k] = (o.matched + v.matched, o.stated + v.stated)
        }
    }

    static func matchObject(_ obj: Object?, _ want: ShapesWorld.ShapeSpec) -> Counts {
        var out: Counts = [:]
        out[.objectColour] = (obj?.colour == want.colour ? 1 : 0, 1)
        out[.shape] = (obj?.kind == want.kind ? 1 : 0, 1)
        if let s = want.size { out[.size] = (obj?.size == s ? 1 : 0, 1) }
        if let p = want.position { out[.position] = (obj?.position == p ? 1 : 0, 1) }
        return out
    }

    /// How one parsed image matches one caption, per group. A two-shape caption takes the two
    /// largest objects in whichever pairing matches more (the first on ties).
    public static func match(_ parsed: Parse, _ caption: ShapesWorld.Caption) -> Counts {
        var out: Counts = [.background: (parsed.background == caption.background ? 1 : 0, 1)]
        let objs = parsed.objects
        if caption.shapes.count == 1 {
            add(&out, matchObject(objs.first, caption.shapes[0]))
            return out
        }
        let a = objs.count > 0 ? objs[0] : nil, b = objs.count > 1 ? objs[1] : nil
        var first: Counts = [:], second: Counts = [:]
        add(&first, matchObject(a, caption.shapes[0])); add(&first, matchObject(b, caption.shapes[1]))
        add(&second, matchObject(b, caption.shapes[0])); add(&second, matchObject(a, caption.shapes[1]))
        func total(_ c: Counts) -> Int { c.values.reduce(0) { $0 + $1.matched } }
        add(&out, total(second) > total(first) ? second : first)
        return out
    }

    static func fraction(_ c: Counts) -> Double {
        let m = c.values.reduce(0) { $0 + $1.matched }, n = c.values.reduce(0) { $0 + $1.stated }
        return n > 0 ? Double(m) / Double(n) : 0
    }

    /// The figures of images against their captions. R-precision scores each image against its
    /// own caption and every other distinct caption of `pool` (default: the captions).
    public static func score(parses: [Parse], captions: [String], pool: [String]? = nil) throws -> Report {
        guard parses.count == captions.count, !parses.isEmpty else {
            throw EvalError.mismatchedCounts(images: parses.count, captions: captions.count)
        }
        let specs = try captions.map(ShapesWorld.parseCaption)
        let poolSpecs = try pool.map { try $0.map(ShapesWorld.parseCaption) } ?? specs
        var total: Counts = [:]
        for (p, s) in zip(parses, specs) { add(&total, match(p, s)) }
        var groups: [String: Double] = [:]
        for (g, v) in total { groups[g.rawValue] = Double(v.matched) / Double(v.stated) }
        let bgc = total[.background] ?? (0, 0), objc = total[.objectColour] ?? (0, 0)
        if bgc.stated + objc.stated > 0 {
            groups[Group.colour.rawValue] = Double(bgc.matched + objc.matched) / Double(bgc.stated + objc.stated)
        }
        var r = 0.0
        for (p, s) in zip(parses, specs) {
            let own = fraction(match(p, s))
            var beaten = false, ties = 0
            for o in poolSpecs where o != s {
                let f = fraction(match(p, o))
                if f > own { beaten = true; break }
                if f == own { ties += 1 }
            }
            if !beaten { r += 1 / Double(1 + ties) }
        }
        return Report(groups: groups, overall: fraction(total), rPrecision: r / Double(parses.count), count: parses.count)
    }

    public static func score(images: [RGBImage], captions: [String], pool: [String]? = nil) throws -> Report {
        try score(parses: images.map(parse), captions: captions, pool: pool)
    }

    /// A fixed-width table of reports (percentages), the same columns as tools/adherence.py prints.
    public static func table(_ rows: [(name: String, report: Report)]) -> String {
        let cols = ["colour", "background", "object colour", "shape", "size", "position"]
        func pad(_ s: String, _ n: Int, left: Bool = false) -> String {
            let s = String(s.prefix(n))
            let fill = String(repeating: " ", count: max(0, n - s.count))
            return left ? s + fill : fill + s
        }
        var lines = [pad("", 28, left: true) + " " + pad("n", 4) + " "
                     + (cols + ["overall", "r_precision"]).map { pad(String($0.prefix(11)), 11) }.joined(separator: " ")]
        for (name, r) in rows {
            let values = cols.map { r.groups[$0] } + [r.overall, r.rPrecision]
            lines.append(pad(name, 28, left: true) + " " + pad(String(r.count), 4) + " "
                         + values.map { v in pad(v.map { String(format: "%.1f%%", 100 * $0) } ?? "n/a", 11) }.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}
