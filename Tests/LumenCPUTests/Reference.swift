import Foundation

/// Plain float64 references for the ops, written for clarity, not speed.
enum Reference {
    /// y[m, n] = Σ_k x[m, k] w[n, k] + bias[n]
    static func linear(_ x: [Double], _ w: [Double], _ bias: [Double]?, m: Int, n: Int, k: Int) -> [Double] {
        var y = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = bias?[j] ?? 0
                for p in 0..<k { s += x[i * k + p] * w[j * k + p] }
                y[i * n + j] = s
            }
        }
        return y
    }

    static func conv2d(_ x: [Double], _ w: [Double], _ bias: [Double]?, batch: Int, c: Int, h: Int, wd: Int,
                       o: Int, kh: Int, kw: Int, stride: Int, pad: Int) -> (out: [Double], oh: Int, ow: Int) {
        let oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1
        var y = [Double](repeating: 0, count: batch * o * oh * ow)
        for b in 0..<batch {
            for oc in 0..<o {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var s = bias?[oc] ?? 0
                        for ic in 0..<c {
                            for ky in 0..<kh {
                                let iy = oy * stride - pad + ky
                                if iy < 0 || iy >= h { continue }
                                for kx in 0..<kw {
                                    let ix = ox * stride - pad + kx
                                    if ix < 0 || ix >= wd { continue }
                                    s += x[((b * c + ic) * h + iy) * wd + ix] * w[((oc * c + ic) * kh + ky) * kw + kx]
                                }
                            }
                        }
                        y[((b * o + oc) * oh + oy) * ow + ox] = s
                    }
                }
            }
        }
        return (y, oh, ow)
    }

    static func groupNorm(_ x: [Double], batch: Int, c: Int, spatial: Int, groups: Int, eps: Double,
                          gamma: [Double]?, beta: [Double]?, silu: Bool) -> [Double] {
        var y = x
        let cpg = c / groups
        for b in 0..<batch {
            for g in 0..<groups {
                let start = (b * c + g * cpg) * spatial, len = cpg * spatial
                let slice = x[start..<(start + len)]
                let mean = slice.reduce(0, +) / Double(len)
                let variance = slice.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(len)
                for i in 0..<len {
                    let ch = g * cpg + i / spatial
                    var v = (x[start + i] - mean) / (variance + eps).squareRoot()
                    if let gamma, let beta { v = v * gamma[ch] + beta[ch] }
                    y[start + i] = silu ? Reference.silu(v) : v
                }
            }
        }
        return y
    }

    static func layerNorm(_ x: [Double], rows: Int, d: Int, eps: Double, gamma: [Double]?, beta: [Double]?) -> [Double] {
        var y = x
        for r in 0..<rows {
            let row = x[(r * d)..<((r + 1) * d)]
            let mean = row.reduce(0, +) / Double(d)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d)
            for i in 0..<d {
                let v = (x[r * d + i] - mean) / (variance + eps).squareRoot()
                y[r * d + i] = gamma.map { v * $0[i] + beta![i] } ?? v
            }
        }
        return y
    }

    static func softmax(_ x: [Double], rows: Int, d: Int) -> [Double] {
        var y = x
        for r in 0..<rows {
            let row = x[(r * d)..<((r + 1) * d)]
            let m = row.max()!
            let e = row.map { exp($0 - m) }
            let s = e.reduce(0, +)
            for i in 0..<d { y[r * d + i] = e[i] / s }
        }
        return y
    }

    /// q [B, Lq, H·D], k/v [B, Lk, H·D] → [B, Lq, H·D]
    static func attention(_ q: [Double], _ k: [Double], _ v: [Double], b: Int, lq: Int, lk: Int, heads: Int,
                          dh: Int, causal: Bool, scale: Double) -> [Double] {
        let w = heads * dh
        var out = [Double](repeating: 0, count: b * lq * w)
        for bi in 0..<b {
            for h in 0..<heads {
                for i in 0..<lq {
                    var scores = [Double](repeating: -.infinity, count: lk)
                    for j in 0..<lk where !(causal && j > i) {
                        var s = 0.0
                        for d in 0..<dh { s += q[(bi * lq + i) * w + h * dh + d] * k[(bi * lk + j) * w + h * dh + d] }
                        scores[j] = s * scale
                    }
                    let m = scores.max()!
                    let e = scores.map { $0 == -.infinity ? 0 : exp($0 - m) }
                    let total = e.reduce(0, +)
                    for d in 0..<dh {
                        var s = 0.0
                        for j in 0..<lk { s += e[j] * v[(bi * lk + j) * w + h * dh + d] }
                        out[(bi * lq + i) * w + h * dh + d] = s / total
                    }
                }
            }
        }
        return out
    }

    static func silu(_ x: Double) -> Double { x / (1 + exp(-x)) }
    static func gelu(_ x: Double) -> Double { 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }
    static func geluTanh(_ x: Double) -> Double { 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) }
    static func quickGelu(_ x: Double) -> Double { x / (1 + exp(-1.702 * x)) }
}
