/// The float `log` and `sincos` that torch's AVX2 normal kernel uses (Julien Pommier's Cephes-based
/// `avx_mathfun`), evaluated one lane at a time with the same roundings.
///
/// Torch's x86 wheels are built by GCC, which contracts a multiply feeding an add into one fused
/// multiply-add (`-ffp-contract=fast` acts across intrinsics too); so the polynomial steps here are
/// `addingProduct` (one rounding) where GCC fuses them. Which pairs GCC fuses was established against
/// torch 2.15's `randn` on millions of values (tools/make_generation_fixtures.py keeps the check); the
/// remaining choices only touch products that are exact, where fusing cannot change a bit.
enum AVXMathFunctions {
    // Cephes logf coefficients.
    private static let logP: [Float] = [
        7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
        -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1,
    ]
    private static let logQ1: Float = -2.12194440e-4
    private static let logQ2: Float = 0.693359375
    private static let sqrtHalf: Float = 0.707106781186547524

    /// Natural logarithm for positive normal `x` (torch only passes values in (0, 1]).
    static func log(_ input: Float) -> Float {
        if input <= 0 { return .nan }
        let clamped = max(input, Float(bitPattern: 0x0080_0000))
        let bits = clamped.bitPattern
        var e = Float(Int32(bitPattern: bits >> 23) - 0x7F) + 1
        // Mantissa in [0.5, 1).
        var x = Float(bitPattern: (bits & ~0x7F80_0000) | Float(0.5).bitPattern)
        let below = x < sqrtHalf
        let tmp: Float = below ? x : 0
        x = x - 1
        e = e - (below ? 1 : 0)
        x = x + tmp
        let z = x * x
        var y = logP[0]
        for p in logP.dropFirst() {
            y = p.addingProduct(y, x)
        }
        y = y * x
        y = (e * logQ1).addingProduct(y, z)
        y = y.addingProduct(-z, 0.5)
        x = x + y
        x = x.addingProduct(e, logQ2)
        return x
    }

    private static let minusDP1: Float = -0.78515625
    private static let minusDP2: Float = -2.4187564849853515625e-4
    private static let minusDP3: Float = -3.77489497744594108e-8
    private static let sinP0: Float = -1.9515295891E-4
    private static let sinP1: Float = 8.3321608736E-3
    private static let sinP2: Float = -1.6666654611E-1
    private static let cosP0: Float = 2.443315711809948E-005
    private static let cosP1: Float = -1.388731625493765E-003
    private static let cosP2: Float = 4.166664568298827E-002
    private static let fourOverPi: Float = 1.27323954473516

    /// Sine and cosine together (`sincos256_ps`); accurate for |x| below about 8192.
    static func sincos(_ input: Float) -> (sin: Float, cos: Float) {
        var sinNegative = input.sign == .minus
        var x = abs(input)
        // Octant: j = (trunc(x * 4/π) + 1) & ~1.
        var j = Int32(x * fourOverPi)
        j = (j &+ 1) & ~1
        let y = Float(j)
        if j & 4 != 0 { sinNegative.toggle() }
        let cosNegative = ((~(j &- 2)) & 4) != 0
        let useSinPolynomialForSin = (j & 2) != 0
        // Extended-precision reduction x - y·π/4 in three parts.
        x = x.addingProduct(y, minusDP1)
        x = x.addingProduct(y, minusDP2)
        x = x.addingProduct(y, minusDP3)
        let z = x * x

        var c = cosP0
        c = cosP1.addingProduct(c, z)
        c = cosP2.addingProduct(c, z)
        c = c * z
        c = (-(z * 0.5)).addingProduct(c, z)
        c = c + 1

        var s = sinP0
        s = sinP1.addingProduct(s, z)
        s = sinP2.addingProduct(s, z)
        s = s * z
        s = x.addingProduct(s, x)

        var sine = useSinPolynomialForSin ? c : s
        var cosine = useSinPolynomialForSin ? s : c
        if sinNegative { sine = -sine }
        if cosNegative { cosine = -cosine }
        return (sine, cosine)
    }
}
