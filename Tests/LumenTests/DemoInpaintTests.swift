import Foundation
import Lumen
import LumenEval
import XCTest

/// The demo model inpaints (the README's example): "a red circle" masked into a plain blue image
/// lands where the mask is, as the shapes-world scorer parses the result. The scorer knows nothing
/// of the mask; it finds the objects by their pixels.
final class DemoInpaintTests: XCTestCase {
    /// The white square of the mask, off the centre where the model draws an unplaced shape.
    static let box = (x0: 32, y0: 8, x1: 60, y1: 36)
    static let seeds = 0..<8

    static func scene() -> (image: InitImage, mask: InitImage) {
        let blue: [Float] = [30, 60, 220].map { $0 / 255 }  // the shapes world's blue
        var mask = [Float](repeating: 0, count: 64 * 64 * 3)
        for y in box.y0..<box.y1 { for x in box.x0..<box.x1 { for c in 0..<3 { mask[(y * 64 + x) * 3 + c] = 1 } } }
        return (InitImage(width: 64, height: 64, rgb: Array((0..<(64 * 64)).map { _ in blue }.joined())),
                InitImage(width: 64, height: 64, rgb: mask))
    }

    static func request(seed: UInt64) -> GenerationRequest {
        var r = GenerationRequest(prompt: "a red circle")
        (r.initImage, r.mask) = scene()
        r.strength = 1
        r.steps = 20
        r.guidanceScale = 4
        r.seed = seed
        return r
    }

    func testARedCircleLandsInTheMask() throws {
        let pipeline = try Pipeline(modelPath: DemoModelTests.folder, backend: .cpu)
        var hits = 0
        for seed in Self.seeds {
            let parse = ShapesAdherence.parse(try pipeline.generate(Self.request(seed: UInt64(seed)))[0])
            var hit = false
            if let largest = parse.objects.first {
                // The box centre, doubled to stay in integers (the box is inclusive).
                let cx = largest.box[0] + largest.box[2], cy = largest.box[1] + largest.box[3]
                let inside = (2 * Self.box.x0...2 * Self.box.x1).contains(cx) && (2 * Self.box.y0...2 * Self.box.y1).contains(cy)
                hit = parse.background == "blue" && largest.colour == "red" && largest.kind == "circle" && inside
            }
            print("seed \(seed): background \(parse.background), objects \(parse.objects.map { "\($0.colour) \($0.kind) \($0.box)" }) -> \(hit)")
            hits += hit ? 1 : 0
        }
        XCTAssertGreaterThanOrEqual(hits, 6, "a red circle centred inside the mask in \(hits) of \(Self.seeds.count) seeds")
    }
}
