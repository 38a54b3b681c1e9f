import LumenRuntime

/// The tile settings of diffusers' `AutoencoderKL.tiled_decode`: the latent is cut into
/// overlapping tiles of `latentTileSize` latents, each decoded on its own (post_quant_conv and
/// decoder), neighbours blended over `blendExtent` pixels with linear ramps and every tile
/// cropped to `rowLimit` pixels before the tiles are joined.
public struct VAETileLayout: Sendable, Hashable, Codable, CustomStringConvertible {
    /// diffusers' `tile_latent_min_size`: the tile edge in latents.
    public var latentTileSize: Int
    /// diffusers' `tile_sample_min_size`: the tile edge in pixels.
    public var sampleTileSize: Int
    /// diffusers' `tile_overlap_factor`.
    public var overlapFactor: Double

    public init(latentTileSize: Int, sampleTileSize: Int, overlapFactor: Double = 0.25) {
        self.latentTileSize = latentTileSize
        self.sampleTileSize = sampleTileSize
        self.overlapFactor = overlapFactor
    }

    /// diffusers' defaults for a VAE, or a tile of `sampleSize` pixels: the sample tile is
    /// `sample_size` and the latent tile `sample_size / 2^(levels - 1)`.
    public init(config: AutoencoderKLConfig, sampleSize: Int? = nil) {
        let s = sampleSize ?? config.sampleSize
        self.init(latentTileSize: s / config.scaleFactor, sampleTileSize: s)
    }

    /// Stride between tile origins, in latents (Python's `int()` truncates).
    public var overlapSize: Int { Int(Double(latentTileSize) * (1 - overlapFactor)) }
    /// Pixels over which a tile fades into its upper and left neighbours.
    public var blendExtent: Int { Int(Double(sampleTileSize) * overlapFactor) }
    /// Pixels of each tile kept (from its top-left corner) after blending.
    public var rowLimit: Int { sampleTileSize - blendExtent }

    /// Stride between the image tiles of a tiled encoding, in pixels.
    public var encodeStride: Int { Int(Double(sampleTileSize) * (1 - overlapFactor)) }
    /// Latents over which an encoded tile fades into its upper and left neighbours.
    public var encodeBlendExtent: Int { Int(Double(latentTileSize) * overlapFactor) }
    /// Latents of each encoded tile kept after blending.
    public var encodeRowLimit: Int { latentTileSize - encodeBlendExtent }

    /// diffusers' test in `_encode`: tiles only when the image is larger than one tile.
    public func tilesImage(height: Int, width: Int) -> Bool {
        height > sampleTileSize || width > sampleTileSize
    }

    /// diffusers' test in `_decode`: tiles only when the latent is larger than one tile.
    public func tiles(latentHeight: Int, latentWidth: Int) -> Bool {
        latentHeight > latentTileSize || latentWidth > latentTileSize
    }

    /// Tile origins along an axis of `length` latents.
    public func origins(_ length: Int) -> [Int] { Array(stride(from: 0, to: length, by: max(overlapSize, 1))) }

    /// The output size along an axis of `length` latents, for a VAE with scale factor `f`:
    /// the sum of the cropped tiles (equal to `length · f` when `rowLimit == overlapSize · f`).
    public func outputLength(_ length: Int, scaleFactor f: Int) -> Int {
        origins(length).reduce(0) { $0 + min(min(latentTileSize, length - $1) * f, rowLimit) }
    }

    public var description: String {
        "\(sampleTileSize)px tiles (\(latentTileSize) latents), overlap factor \(overlapFactor)"
    }
}

extension AutoencoderKL {
    /// diffusers' `AutoencoderKL.tiled_decode`, for latents [B, C, H, W] (already divided by the
    /// scaling factor). `decodeTile` decodes one latent tile [B, C, h, w] to [B, 3, h·f, w·f] —
    /// a program compiled for the tile's shape (edge tiles may be smaller). Tiles are decoded
    /// in groups of equal shape, calling `finishedShape` after each group (to drop its program),
    /// then blended on the host in f32 as torch computes it: `a · (1 − y/e) + b · (y/e)` with
    /// both factors rounded to f32, each tile blended in place with its already-blended upper
    /// then left neighbour, and cropped to `rowLimit` before the tiles are joined.
    public static func tiledDecode(latents: Tensor, layout: VAETileLayout,
                                   decodeTile: (Tensor) throws -> Tensor,
                                   finishedShape: (_ height: Int, _ width: Int) -> Void = { _, _ in }) throws -> Tensor {
        try tiled(latents, op: "tiledDecode", tile: layout.latentTileSize, stride: layout.overlapSize,
                  blend: layout.blendExtent, rowLimit: layout.rowLimit, apply: decodeTile, finishedShape: finishedShape)
    }

    /// diffusers' `AutoencoderKL._tiled_encode`, for an image [B, 3, H, W] in [-1, 1]: tiles of
    /// `sampleTileSize` pixels every `encodeStride` pixels, each encoded on its own by
    /// `encodeTile` to its moments [B, 2·latent, h, w] (encoder and quant_conv, see
    /// `encodeMoments`), blended over `encodeBlendExtent` latents and cropped to
    /// `encodeRowLimit` as `tiledDecode` does. Returns the joined moments.
    public static func tiledEncode(image: Tensor, layout: VAETileLayout,
                                   encodeTile: (Tensor) throws -> Tensor,
                                   finishedShape: (_ height: Int, _ width: Int) -> Void = { _, _ in }) throws -> Tensor {
        try tiled(image, op: "tiledEncode", tile: layout.sampleTileSize, stride: layout.encodeStride,
                  blend: layout.encodeBlendExtent, rowLimit: layout.encodeRowLimit, apply: encodeTile, finishedShape: finishedShape)
    }

    /// The tiling both directions share: `input` [B, C, H, W] cut into tiles of `tile` every
    /// `stride` along each axis, each mapped by `apply`, neighbours blended over `blend` output
    /// elements, every tile cropped to `rowLimit` and the tiles joined.
    static func tiled(_ input: Tensor, op: String, tile L: Int, stride: Int, blend: Int, rowLimit limit: Int,
                      apply: (Tensor) throws -> Tensor, finishedShape: (_ height: Int, _ width: Int) -> Void) throws -> Tensor {
        guard input.shape.rank == 4 else {
            throw LumenError.shapeMismatch(op: op, detail: "the input must be [B, C, H, W], got \(input.shape)")
        }
        guard L > 0, stride > 0, limit > 0 else {
            throw LumenError.invalidArgument(op: op, detail: "tile \(L), stride \(stride), row limit \(limit): the tiles must overlap and keep something")
        }
        let (b, c, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let z = input.toFloats()
        let rowOrigins = Array(Swift.stride(from: 0, to: h, by: stride)), colOrigins = Array(Swift.stride(from: 0, to: w, by: stride))

        // Map, one tile shape at a time.
        struct Slot { let i: Int; let j: Int; let th: Int; let tw: Int }
        var slots: [Slot] = []
        for (i, y0) in rowOrigins.enumerated() {
            for (j, x0) in colOrigins.enumerated() {
                slots.append(Slot(i: i, j: j, th: min(L, h - y0), tw: min(L, w - x0)))
            }
        }
        var shapes: [[Int]] = []
        for s in slots where !shapes.contains([s.th, s.tw]) { shapes.append([s.th, s.tw]) }
        var tiles = [[DecodedTile?]](repeating: [DecodedTile?](repeating: nil, count: colOrigins.count), count: rowOrigins.count)
        for shape in shapes {
            let (th, tw) = (shape[0], shape[1])
            for s in slots where s.th == th && s.tw == tw {
                let (y0, x0) = (rowOrigins[s.i], colOrigins[s.j])
                var tile = [Float](repeating: 0, count: b * c * th * tw)
                for n in 0..<(b * c) {
                    for y in 0..<th {
                        let src = n * h * w + (y0 + y) * w + x0, dst = (n * th + y) * tw
                        for x in 0..<tw { tile[dst + x] = z[src + x] }
                    }
                }
                let out = try apply(try Tensor(shape: [b, c, th, tw], values: tile))
                guard out.shape.rank == 4, out.shape[0] == b else {
                    throw LumenError.shapeMismatch(op: op, detail: "a [\(b), \(c), \(th), \(tw)] tile came back as \(out.shape)")
                }
                tiles[s.i][s.j] = DecodedTile(planes: b * out.shape[1], channels: out.shape[1], height: out.shape[2],
                                              width: out.shape[3], data: out.toFloats())
            }
            finishedShape(th, tw)
        }

        // Blend each tile with its (already blended) upper and left neighbours, in place.
        var grid = tiles.map { $0.map { $0! } }
        for i in 0..<grid.count {
            for j in 0..<grid[i].count {
                if i > 0 { blendVertical(grid[i - 1][j], &grid[i][j], extent: blend) }
                if j > 0 { blendHorizontal(grid[i][j - 1], &grid[i][j], extent: blend) }
            }
        }

        // Crop every tile to the row limit and join them.
        let heights = grid.map { min($0[0].height, limit) }, widths = grid[0].map { min($0.width, limit) }
        let outH = heights.reduce(0, +), outW = widths.reduce(0, +)
        let channels = grid[0][0].channels, planes = grid[0][0].planes
        var result = [Float](repeating: 0, count: planes * outH * outW)
        var top = 0
        for i in 0..<grid.count {
            var left = 0
            for j in 0..<grid[i].count {
                let t = grid[i][j]
                for p in 0..<planes {
                    for y in 0..<heights[i] {
                        let src = (p * t.height + y) * t.width, dst = (p * outH + top + y) * outW + left
                        for x in 0..<widths[j] { result[dst + x] = t.data[src + x] }
                    }
                }
                left += widths[j]
            }
            top += heights[i]
        }
        return try Tensor(shape: [b, channels, outH, outW], values: result)
    }

    /// One decoded tile on the host: `planes` (batch × channels) planes of height × width.
    struct DecodedTile {
        let planes: Int
        let channels: Int
        let height: Int
        let width: Int
        var data: [Float]
    }

    /// diffusers' `blend_v`: the first e rows of `b` fade in from the last e rows of `a`.
    static func blendVertical(_ a: DecodedTile, _ b: inout DecodedTile, extent: Int) {
        let e = min(a.height, b.height, extent)
        guard e > 0 else { return }
        for y in 0..<e {
            let (wa, wb) = (Float(1 - Double(y) / Double(e)), Float(Double(y) / Double(e)))
            for p in 0..<b.planes {
                let ra = (p * a.height + a.height - e + y) * a.width, rb = (p * b.height + y) * b.width
                for x in 0..<b.width {
                    let blended = a.data[ra + x] * wa + b.data[rb + x] * wb
                    b.data[rb + x] = blended
                }
            }
        }
    }

    /// diffusers' `blend_h`: the first e columns of `b` fade in from the last e columns of `a`.
    static func blendHorizontal(_ a: DecodedTile, _ b: inout DecodedTile, extent: Int) {
        let e = min(a.width, b.width, extent)
        guard e > 0 else { return }
        for x in 0..<e {
            let (wa, wb) = (Float(1 - Double(x) / Double(e)), Float(Double(x) / Double(e)))
            for p in 0..<b.planes {
                for y in 0..<b.height {
                    let ia = (p * a.height + y) * a.width + a.width - e + x, ib = (p * b.height + y) * b.width + x
                    let blended = a.data[ia] * wa + b.data[ib] * wb
                    b.data[ib] = blended
                }
            }
        }
    }

    /// The largest tensor (bytes at 4 per element) the decoder graph holds for a latent of
    /// h × w: what an executor with a binding limit has to fit.
    public func widestDecoderTensor(latentHeight h: Int, latentWidth w: Int, weights: WeightStore) throws -> Int {
        let g = Graph()
        _ = try decode(g, latents: try g.input("latents", shape: [1, config.latentChannels, h, w]), weights: weights)
        return Self.widestTensor(g)
    }

    /// The largest tensor (bytes at 4 per element) the encoder graph holds for an h × w image.
    public func widestEncoderTensor(height h: Int, width w: Int, weights: WeightStore) throws -> Int {
        let g = Graph()
        _ = try encodeMoments(g, image: try g.input("image", shape: [1, config.inChannels, h, w]), weights: weights)
        return Self.widestTensor(g)
    }

    /// Bytes at 4 per element of a graph's largest computed tensor (weights and views left out).
    static func widestTensor(_ g: Graph) -> Int {
        var widest = 0
        for n in g.nodes {
            switch n.op {
            case .constant, .reshape: continue
            default: widest = max(widest, n.shape.count * 4)
            }
        }
        return widest
    }
}
