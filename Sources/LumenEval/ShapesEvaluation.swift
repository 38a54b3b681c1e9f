import Foundation
import Lumen

/// Generates a shapes-world prompt set with a pipeline and scores the images: what `lumen eval`
/// runs and what tools/eval_adherence.py computes for diffusers on the same weights and seeds.
public enum ShapesEvaluation {
    /// The file of held-out prompts a shapes-world model folder carries.
    public static let promptFileName = "eval_prompts.tsv"

    /// `limit` prompts spread over the set (every k-th, as tools/eval_adherence.py --limit picks
    /// them, so one- and two-shape captions both appear); all of them without a limit.
    public static func spread(_ prompts: [ShapesWorld.Prompt], limit: Int?) -> [ShapesWorld.Prompt] {
        guard let limit, limit > 0, limit < prompts.count else { return prompts }
        let step = Double(prompts.count) / Double(limit)
        return (0..<limit).map { prompts[Int(Double($0) * step)] }
    }

    /// The request a prompt is generated with: its caption and seed, the given sampling settings.
    public static func request(for prompt: ShapesWorld.Prompt, steps: Int, guidance: Float,
                               scheduler: SchedulerKind?) -> GenerationRequest {
        var r = GenerationRequest(prompt: prompt.caption)
        r.seed = prompt.seed
        r.steps = steps
        r.guidanceScale = guidance
        r.scheduler = scheduler
        return r
    }

    /// Generates each prompt (one image each) and calls `onImage` after each.
    public static func generate(_ pipeline: Pipeline, prompts: [ShapesWorld.Prompt], steps: Int, guidance: Float,
                                scheduler: SchedulerKind? = nil,
                                onImage: (Int, ShapesWorld.Prompt, RGBImage) throws -> Void = { _, _, _ in }) throws -> [RGBImage] {
        var images: [RGBImage] = []
        for (i, p) in prompts.enumerated() {
            guard let image = try pipeline.generate(request(for: p, steps: steps, guidance: guidance, scheduler: scheduler)).first else {
                throw GenerationError.invalidRequest("no image came back for prompt \(p.index)")
            }
            images.append(image)
            try onImage(i, p, image)
        }
        return images
    }
}
