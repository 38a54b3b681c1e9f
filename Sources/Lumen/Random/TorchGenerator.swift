#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// PyTorch's CPU random generator, reproduced bit for bit: `torch.Generator("cpu").manual_seed(seed)`
/// followed by `torch.randn(count, generator: g)` (float32) gives the same numbers as
/// `TorchGenerator(seed: seed).randn(count: count)`, so a seed means the same picture as in diffusers.
///
/// Torch draws normals two ways, and both are reproduced here:
/// - fewer than 16 values: one pair of 53-bit uniforms per two normals, Box-Muller in double, with the
///   second normal of each pair kept in the generator for the next draw (which may be another call);
/// - 16 or more: every uniform (24-bit floats) is drawn first, then transformed 16 at a time (8 pairs)
///   in float; when the count is not a multiple of 16 the last 16 values are drawn and transformed
///   again. The float transform depends on the kernel torch picked for the CPU (`NormalKernel`).
public struct TorchGenerator: Sendable {
    /// Which of torch's float Box-Muller kernels to reproduce for draws of 16 values or more.
    public enum NormalKernel: String, Sendable, Hashable, CaseIterable {
        /// x86-64 with AVX2 (and AVX-512: torch uses the same kernel there): the Cephes-style
        /// polynomials of `avx_mathfun.h`, with the multiply-adds that GCC fuses into FMA.
        /// This is what diffusers gives on practically every x86-64 machine.
        case avx2
        /// Torch's portable kernel (`ATEN_CPU_CAPABILITY=default`, and CPUs without AVX2): the C
        /// library's `logf`, `cosf` and `sinf`. Matches torch exactly where both use glibc's libm.
        case scalar
    }

    /// The seed given to `init`, as torch's `initial_seed()` reports it.
    public let seed: UInt64
    /// The float kernel reproduced by `randn` for 16 values or more.
    public var kernel: NormalKernel

    private var engine: MersenneTwister
    /// The second normal of the last double Box-Muller pair, used by the next small draw.
    private var nextDoubleNormal: Double?

    /// A generator in the state `torch.Generator("cpu").manual_seed(seed)` leaves.
    public init(seed: UInt64, kernel: NormalKernel = .avx2) {
        self.seed = seed
        self.kernel = kernel
        self.engine = MersenneTwister(seed: seed)
        self.nextDoubleNormal = nil
    }

    /// The next 32 random bits (torch's `random()`).
    public mutating func random32() -> UInt32 { engine.next() }

    /// The next 64 random bits (torch's `random64()`: the first 32-bit draw is the high half).
    public mutating func random64() -> UInt64 {
        let high = UInt64(engine.next())
        let low = UInt64(engine.next())
        return high << 32 | low
    }

    /// `torch.rand(count, generator: g)` in float32: uniform in [0, 1) from 24 random bits each.
    public mutating func rand(count: Int) -> [Float] {
        (0..<max(count, 0)).map { _ in uniformFloat() }
    }

    /// `torch.randn(count, generator: g)` in float32 on the CPU, for a contiguous tensor of `count`
    /// elements (any shape: torch fills it in memory order). diffusers' `randn_tensor` with one
    /// generator draws the whole batch in one call, so a batch of latents is one `randn` of
    /// `batch * channels * height * width` values.
    public mutating func randn(count: Int) -> [Float] {
        guard count > 0 else { return [] }
        if count < 16 {
            return (0..<count).map { _ in Float(nextNormalDouble()) }
        }
        var data = [Float](repeating: 0, count: count)
        for i in 0..<count { data[i] = uniformFloat() }
        var start = 0
        while start + 16 <= count {
            transform16(&data, at: start)
            start += 16
        }
        if count % 16 != 0 {
            // Torch redraws the last 16 uniforms and overwrites the tail, already-computed values included.
            for i in (count - 16)..<count { data[i] = uniformFloat() }
            transform16(&data, at: count - 16)
        }
        return data
    }

    // MARK: - Uniforms

    /// Torch's `uniform_real_distribution<float>(0, 1)`: the low 24 bits of one draw, times 2^-24.
    private mutating func uniformFloat() -> Float {
        Float(engine.next() & 0xFF_FFFF) * (1.0 / 16_777_216.0)
    }

    /// Torch's `uniform_real_distribution<double>(0, 1)`: the low 53 bits of `random64()`, times 2^-53.
    private mutating func uniformDouble() -> Double {
        Double(random64() & ((1 << 53) - 1)) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Torch's `normal_distribution<double>`: Box-Muller on two 53-bit uniforms, returning the cosine
    /// branch and keeping the sine branch for the next call.
    private mutating func nextNormalDouble() -> Double {
        if let cached = nextDoubleNormal {
            nextDoubleNormal = nil
            return cached
        }
        let u1 = uniformDouble()
        let u2 = uniformDouble()
        let radius = (-2.0 * log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        nextDoubleNormal = radius * sin(theta)
        return radius * cos(theta)
    }

    // MARK: - Float Box-Muller on 16 values

    /// Values `at..<at+8` hold the first uniforms of 8 pairs, `at+8..<at+16` the second ones; they are
    /// replaced by `r cos θ` and `r sin θ` with `r = sqrt(-2 log(1 - u1))`, `θ = 2π u2`.
    private func transform16(_ data: inout [Float], at start: Int) {
        let twoPi = Float(2.0 * Double.pi)
        for j in 0..<8 {
            let u1 = 1 - data[start + j]
            let u2 = data[start + j + 8]
            switch kernel {
            case .avx2:
                let radius = (-2 * AVXMathFunctions.log(u1)).squareRoot()
                let (sine, cosine) = AVXMathFunctions.sincos(twoPi * u2)
                data[start + j] = radius * cosine
                data[start + j + 8] = radius * sine
            case .scalar:
                let radius = (-2 * logf(u1)).squareRoot()
                // The portable kernel forms θ in double (2.0f * pi<double> * u2) and rounds once.
                let theta = Float(2.0 * Double.pi * Double(u2))
                data[start + j] = radius * cosf(theta)
                data[start + j + 8] = radius * sinf(theta)
            }
        }
    }
}

/// The 32-bit Mersenne Twister as torch seeds it: the 64-bit seed's low 32 bits start the state.
struct MersenneTwister: Sendable {
    private static let n = 624
    private static let m = 397
    private var state: [UInt32]
    private var index: Int

    init(seed: UInt64) {
        var state = [UInt32](repeating: 0, count: Self.n)
        state[0] = UInt32(truncatingIfNeeded: seed)
        for j in 1..<Self.n {
            let previous = state[j - 1]
            state[j] = 1_812_433_253 &* (previous ^ (previous >> 30)) &+ UInt32(j)
        }
        self.state = state
        self.index = Self.n
    }

    mutating func next() -> UInt32 {
        if index >= Self.n { regenerate() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func regenerate() {
        state.withUnsafeMutableBufferPointer { s in
            for k in 0..<Self.n {
                let y = (s[k] & 0x8000_0000) | (s[(k + 1) % Self.n] & 0x7FFF_FFFF)
                s[k] = s[(k + Self.m) % Self.n] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908_B0DF : 0)
            }
        }
        index = 0
    }
}
