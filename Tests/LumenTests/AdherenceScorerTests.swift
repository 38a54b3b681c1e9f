import Foundation
import Lumen
import LumenEval
import XCTest

/// Lumen's Swift adherence scorer against tools/adherence.py: the same parse of every fixture image
/// (ground truth, degraded ground truth, noise and the demo model's diffusers generations;
/// tools/make_adherence_fixtures.py) and the same figures for the set.
final class AdherenceScorerTests: XCTestCase {
    struct Fixture: Decodable {
        struct Object: Decodable { let colour, kind, size, position: String; let area: Int; let box: [Int] }
        struct Parse: Decodable { let background: String; let objects: [Object] }
        struct Image: Decodable { let file, caption, kind: String; let parse: Parse }
        let images: [Image]
        let report: [String: Double?]
    }

    static let folder = Fixtures.root + "/adherence"

    func load() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Self.folder + "/parses.json")))
    }

    func testParsesMatchThePythonScorer() throws {
        let fixture = try load()
        XCTAssertGreaterThanOrEqual(fixture.images.count, 70)
        var objects = 0
        for item in fixture.images {
            let image = try RGBImage.readPNG(Self.folder + "/" + item.file).image
            let parsed = ShapesAdherence.parse(image)
            XCTAssertEqual(parsed.background, item.parse.background, "\(item.file) (\(item.kind)): background")
            XCTAssertEqual(parsed.objects.count, item.parse.objects.count, "\(item.file) (\(item.kind)): objects")
            for (a, e) in zip(parsed.objects, item.parse.objects) {
                XCTAssertEqual([a.colour, a.kind, a.size, a.position], [e.colour, e.kind, e.size, e.position], "\(item.file) (\(item.kind))")
                XCTAssertEqual(a.area, e.area, "\(item.file) (\(item.kind)): area")
                XCTAssertEqual(a.box, e.box, "\(item.file) (\(item.kind)): box")
                objects += 1
            }
        }
        XCTAssertGreaterThan(objects, 60)
    }

    func testFiguresMatchThePythonScorer() throws {
        let fixture = try load()
        let images = try fixture.images.map { try RGBImage.readPNG(Self.folder + "/" + $0.file).image }
        let report = try ShapesAdherence.score(images: images, captions: fixture.images.map(\.caption))
        for g in ShapesAdherence.Group.allCases {
            let expected = fixture.report[g.rawValue] ?? nil
            XCTAssertEqual(report[g] ?? -1, expected ?? -1, accuracy: 1e-12, g.rawValue)
        }
        XCTAssertEqual(report.overall, fixture.report["overall"]!!, accuracy: 1e-12)
        XCTAssertEqual(report.rPrecision, fixture.report["r_precision"]!!, accuracy: 1e-12)
        XCTAssertEqual(report.count, fixture.images.count)
    }

    func testCaptions() throws {
        let one = try ShapesWorld.parseCaption("A small red circle at the top left on a blue background.")
        XCTAssertEqual(one, ShapesWorld.Caption(background: "blue", shapes: [.init(colour: "red", kind: "circle", size: "small", position: "top left")]))
        let short = try ShapesWorld.parseCaption("an orange cross in the center on a white background")
        XCTAssertEqual(short.shapes, [.init(colour: "orange", kind: "cross", size: nil, position: "center")])
        let two = try ShapesWorld.parseCaption("a red circle and a green square on a white background")
        XCTAssertEqual(two.shapes.map(\.kind), ["circle", "square"])
        XCTAssertEqual(two.background, "white")
        for bad in ["a red circle", "a pink circle on a blue background", "a red blob on a blue background",
                    "a red circle at the middle on a blue background", "a red circle at the center on a blue background",
                    "a red circle and a green on a white background", "the red circle on a blue background", ""] {
            XCTAssertThrowsError(try ShapesWorld.parseCaption(bad), bad)
        }
    }

    /// Synthetic images with a known answer, so the scorer is checked apart from the fixtures.
    func testDrawnScene() throws {
        let w = 64
        var px = [UInt8](repeating: 0, count: w * w * 3)
        for i in 0..<(w * w) { px[3 * i] = 30; px[3 * i + 1] = 60; px[3 * i + 2] = 220 }   // blue
        for y in 8..<24 { for x in 40..<56 { let i = y * w + x; px[3 * i] = 220; px[3 * i + 1] = 30; px[3 * i + 2] = 30 } }  // red square
        let parsed = ShapesAdherence.parse(try RGBImage(width: w, height: w, pixels: px))
        XCTAssertEqual(parsed.background, "blue")
        XCTAssertEqual(parsed.objects.count, 1)
        XCTAssertEqual(parsed.objects.first?.colour, "red")
        XCTAssertEqual(parsed.objects.first?.kind, "square")
        XCTAssertEqual(parsed.objects.first?.size, "small")
        XCTAssertEqual(parsed.objects.first?.position, "top right")
        let right = try ShapesAdherence.score(parses: [parsed], captions: ["a small red square at the top right on a blue background"])
        XCTAssertEqual(right.overall, 1)
        let wrong = try ShapesAdherence.score(parses: [parsed], captions: ["a large green circle at the bottom left on a red background"])
        XCTAssertEqual(wrong.overall, 0)
        XCTAssertEqual(wrong[.colour], 0)
        XCTAssertThrowsError(try ShapesAdherence.score(parses: [], captions: []))
    }
}
