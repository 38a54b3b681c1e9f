/// The extents of a tensor, outermost first (row-major; images are NCHW).
public struct Shape: Sendable, Hashable, ExpressibleByArrayLiteral, CustomStringConvertible,
    RandomAccessCollection
{
    public var dims: [Int]

    public init(_ dims: [Int]) { self.dims = dims }
    public init(arrayLiteral elements: Int...) { self.dims = elements }

    public var rank: Int { dims.count }
    /// The number of elements (1 for a scalar).
    public var count: Int { dims.reduce(1, *) }

    public var startIndex: Int { 0 }
    public var endIndex: Int { dims.count }
    public subscript(i: Int) -> Int {
        get { dims[i] }
        set { dims[i] = newValue }
    }

    /// The dimension at `axis`, where a negative axis counts from the end.
    public func dim(_ axis: Int) -> Int { dims[axis < 0 ? dims.count + axis : axis] }

    /// Row-major strides in elements.
    public var strides: [Int] {
        var s = [Int](repeating: 1, count: dims.count)
        var acc = 1
        for i in stride(from: dims.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc *= dims[i]
        }
        return s
    }

    /// "4x320x64x64".
    public var description: String { dims.map(String.init).joined(separator: "x") }
}
