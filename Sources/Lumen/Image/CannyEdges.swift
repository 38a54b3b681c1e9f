/// The Canny edge map ControlNet's examples feed a canny ControlNet: OpenCV's `cv2.Canny(image,
/// 100, 200)` on the RGB image (3×3 Sobel with replicated borders, the L1 gradient of the channel
/// where it is largest, non-maximum suppression along the gradient quantised to four directions,
/// and hysteresis between the two thresholds over 8-connected pixels), as white on black in all
/// three channels. Written from OpenCV's documented algorithm and checked against its output
/// (tools/make_canny_fixtures.py).
extension RGBImage {
    public func cannyEdges(low: Double = 100, high: Double = 200) throws -> RGBImage {
        let (w, h) = (width, height)
        var lowT = Int(low.rounded(.down)), highT = Int(high.rounded(.down))
        if lowT > highT { swap(&lowT, &highT) }
        // Sobel per channel with replicated borders; keep the channel of largest |dx| + |dy|
        // (the first on ties).
        var dx = [Int](repeating: 0, count: w * h), dy = dx
        var mag = [Int](repeating: 0, count: (w + 2) * (h + 2))  // a ring of zeros around the image
        func px(_ x: Int, _ y: Int, _ c: Int) -> Int {
            Int(pixels[(min(max(y, 0), h - 1) * w + min(max(x, 0), w - 1)) * 3 + c])
        }
        for y in 0..<h {
            for x in 0..<w {
                var best = -1, bx = 0, by = 0
                for c in 0..<3 {
                    let gx = (px(x + 1, y - 1, c) + 2 * px(x + 1, y, c) + px(x + 1, y + 1, c))
                        - (px(x - 1, y - 1, c) + 2 * px(x - 1, y, c) + px(x - 1, y + 1, c))
                    let gy = (px(x - 1, y + 1, c) + 2 * px(x, y + 1, c) + px(x + 1, y + 1, c))
                        - (px(x - 1, y - 1, c) + 2 * px(x, y - 1, c) + px(x + 1, y - 1, c))
                    let m = abs(gx) + abs(gy)
                    if m > best { (best, bx, by) = (m, gx, gy) }
                }
                dx[y * w + x] = bx
                dy[y * w + x] = by
                mag[(y + 1) * (w + 2) + x + 1] = best
            }
        }
        // Non-maximum suppression: 0 = weak candidate, 1 = not an edge, 2 = edge.
        let shift = 15, tg22 = Int((0.4142135623730950488016887242097 * Double(1 << shift) + 0.5).rounded(.down))
        var map = [UInt8](repeating: 1, count: w * h)
        var stack: [Int] = []
        for y in 0..<h {
            for x in 0..<w {
                let i = (y + 1) * (w + 2) + x + 1, m = mag[i]
                guard m > lowT else { continue }
                let xs = dx[y * w + x], ys = dy[y * w + x]
                let ax = abs(xs), ay = abs(ys) << shift
                let tg22x = ax * tg22
                let local: Bool
                if ay < tg22x {
                    local = m > mag[i - 1] && m >= mag[i + 1]
                } else if ay > tg22x + (ax << (shift + 1)) {
                    local = m > mag[i - (w + 2)] && m >= mag[i + (w + 2)]
                } else {
                    let s = (xs ^ ys) < 0 ? -1 : 1
                    local = m > mag[i - (w + 2) - s] && m > mag[i + (w + 2) + s]
                }
                guard local else { continue }
                if m > highT {
                    map[y * w + x] = 2
                    stack.append(y * w + x)
                } else {
                    map[y * w + x] = 0
                }
            }
        }
        // Hysteresis: weak candidates 8-connected to an edge become edges.
        while let p = stack.popLast() {
            let (x, y) = (p % w, p / w)
            for ny in max(y - 1, 0)...min(y + 1, h - 1) {
                for nx in max(x - 1, 0)...min(x + 1, w - 1) where map[ny * w + nx] == 0 {
                    map[ny * w + nx] = 2
                    stack.append(ny * w + nx)
                }
            }
        }
        return try RGBImage(width: w, height: h, pixels: map.flatMap { $0 == 2 ? [255, 255, 255] : [0, 0, 0] })
    }
}
