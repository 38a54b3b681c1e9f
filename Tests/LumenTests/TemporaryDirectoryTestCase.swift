import Foundation
import XCTest

/// A test case with a fresh directory of its own for each test (`dir`), removed afterwards.
class TemporaryDirectoryTestCase: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        try super.setUpWithError()
        dir = NSTemporaryDirectory() + "lumen-\(type(of: self))-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(atPath: dir) }
        try super.tearDownWithError()
    }
}
