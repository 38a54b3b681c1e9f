import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Single files read without `--config` draw diffusers' image: each family gets the configs
/// diffusers' `from_single_file` takes from the repository it maps the family to
/// (tools/make_single_file_fixtures.py: tiny models whose unseen config fields are those
/// repositories', loaded back by diffusers with the repository's configs).
final class SingleFileDefaultsTests: XCTestCase {
    static let reference = Fixtures.root + "/single-file-defaults-reference.safetensors"
    static func file(_ family: String) -> String { Fixtures.root + "/tiny-\(family)-defaults.safetensors" }

    func request(_ ref: SafetensorsFile, _ key: String) throws -> GenerationRequest {
        let fields = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(XCTUnwrap(ref.metadata[key]).utf8)) as? [String: Any])
        var r = GenerationRequest(prompt: fields["prompt"] as! String)
        r.negativePrompt = fields["negative_prompt"] as? String
        r.steps = fields["steps"] as! Int
        r.guidanceScale = Float(fields["guidance_scale"] as! Double)
        r.width = fields["width"] as? Int
        r.height = fields["height"] as? Int
        r.seed = UInt64(fields["seed"] as! Int)
        r.scheduler = (fields["scheduler"] as! String) == "default" ? nil : SchedulerKind(rawValue: fields["scheduler"] as! String)
        return r
    }

    /// The scheduler, size, tokenizer and text activation Lumen assumes are the repository's, field by field.
    func testDefaultsAreTheRepositoriesConfigs() throws {
        let ref = try SafetensorsFile(path: Self.reference)
        for family in ["sd1", "sd2"] {
            let model = try StableDiffusionModel.load(path: Self.file(family))
            let repo = try JSONDecoder().decode(SchedulerConfig.self, from: Data(XCTUnwrap(ref.metadata["\(family).repository_scheduler_config"]).utf8))
            XCTAssertEqual(model.schedulerDefaults, repo, family)
            XCTAssertEqual(model.singleFileDefaults?.repository, ref.metadata["\(family).repository"], family)
            let pipeline = try Pipeline(modelPath: Self.file(family), backend: .cpu)
            let size = pipeline.size(for: GenerationRequest(prompt: "x"))
            XCTAssertEqual("\(size.width)", ref.metadata["\(family).default_size"], family)
            XCTAssertEqual("\(size.height)", ref.metadata["\(family).default_size"], family)
            let ids = pipeline.tokenizer.ids(try request(ref, "\(family).request").prompt, length: 77).map(Int64.init)
            XCTAssertEqual(ids, try ref.tensor("\(family).input_ids").toInts().map(Int64.init), family)
        }
    }

    /// Default flags give diffusers' image: the model's own scheduler (SD 1.x: PNDM on the
    /// scaled-linear schedule; SD 2.x: DDIM with v-prediction) and DPM++ 2M Karras on it.
    func testImagesMatchDiffusersWithoutConfig() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try SafetensorsFile(path: Self.reference)
            for (family, key, image) in [("sd1", "sd1.request", "sd1.image"), ("sd1", "sd1.request_dpmpp_2m_karras", "sd1.image_dpmpp_2m_karras"),
                                         ("sd2", "sd2.request", "sd2.image")] {
                let pipeline = try Pipeline(modelPath: Self.file(family), backend: .cpu)
                try assertDraws(pipeline, try request(ref, key), like: image, in: ref, maxPixelError: 1)
            }
        }
    }

    func testImagesOnVulkanMatchDiffusersWithoutConfig() throws {
        let vulkan = try testVulkanExecutor()
        let ref = try SafetensorsFile(path: Self.reference)
        for family in ["sd1", "sd2"] {
            try assertDraws(try Pipeline(modelPath: Self.file(family), executor: vulkan), try request(ref, "\(family).request"),
                            like: "\(family).image", in: ref, maxPixelError: 12)
        }
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }
}
