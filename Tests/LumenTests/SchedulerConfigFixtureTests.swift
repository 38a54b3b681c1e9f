import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Folders whose scheduler config diffusers saved, against diffusers' StableDiffusionPipeline
/// loading them (tools/make_scheduler_config_fixtures.py): a DPM-Solver++ config, with the
/// `"lambda_min_clipped": -Infinity` Python's json writes (Lumen refused such a folder as "not
/// valid JSON"), and an outdated DDIM config (`clip_sample` true, `steps_offset` 0), which the
/// pipeline rewrites as it is built (Lumen had clipped every step and shifted every timestep),
/// also with Euler chosen instead (`--scheduler euler`: from_config of the rewritten config).
final class SchedulerConfigFixtureTests: XCTestCase {
    static var dir: String { Fixtures.root + "/scheduler-configs" }

    /// tiny-sd with `config` as its scheduler (the other parts linked, model_index.json naming the class).
    func tinyFolder(scheduler config: String, in dir: String) throws -> String {
        try Fixtures.folder(dir + "/" + (config as NSString).lastPathComponent, model: Fixtures.tinyFolder,
                            schedulerConfig: Self.dir + "/" + config + "/scheduler_config.json")
    }

    func testFoldersWithDiffusersSavedConfigsMatchDiffusers() throws {
        let dir = NSTemporaryDirectory() + "lumen-schedulers-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertTrue(try String(contentsOfFile: Self.dir + "/dpmpp-2m/scheduler_config.json", encoding: .utf8)
                        .contains("-Infinity"), "the fixture keeps what diffusers writes")
        let ref = try SafetensorsFile(path: Self.dir + "/reference.safetensors")
        for (name, config) in [("dpmpp-2m", "dpmpp-2m"), ("ddim-outdated", "ddim-outdated"), ("ddim-outdated-euler", "ddim-outdated")] {
            let pipeline = try Pipeline(modelPath: try tinyFolder(scheduler: config, in: dir + "/" + name), backend: .cpu)
            let fields = try DiffusersRequest(ref, key: name)
            var request = fields.request
            request.scheduler = (fields.fields["scheduler"] as? String).flatMap(SchedulerKind.init(rawValue:))
            try assertDraws(pipeline, request, like: "image." + name, in: ref, maxPixelError: 1)
        }
    }
}
