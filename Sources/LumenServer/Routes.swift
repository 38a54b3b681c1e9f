import Foundation
import Hummingbird
import Lumen
import NIOCore

/// A1111's sampler names (its `sd_samplers` labels) for Lumen's schedulers.
enum SamplerNames {
    static func scheduler(a1111 name: String) -> SchedulerKind? {
        let n = name.trimmingCharacters(in: .whitespaces)
        if let k = SchedulerKind.allCases.first(where: { $0.displayName.caseInsensitiveCompare(n) == .orderedSame }) { return k }
        if let k = SchedulerKind(rawValue: n.lowercased()) { return k }
        switch n.lowercased() {
        case "euler_a", "k_euler_a", "k_euler_ancestral": return .eulerAncestral
        case "k_euler": return .euler
        case "plms": return .pndm
        case "dpmpp_2m": return .dpmpp2m
        case "dpmpp_2m_sde": return .dpmpp2mSde
        default: return nil
        }
    }
}

extension LumenServer {
    func addRoutes(_ router: Router<LumenRequestContext>) {
        router.get("/v1/models") { _, _ in
            jsonResponse(["object": "list", "data": self.modelNames.map {
                ["id": $0, "object": "model", "created": 0, "owned_by": "lumen"] as [String: Any]
            }])
        }
        router.post("/v1/images/generations") { request, context in try await self.openAIGenerations(request, context) }
        router.post("/v1/images/edits") { request, context in try await self.openAIEdits(request, context) }
        router.get("/v1/images/files/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard let item = self.results.get(id.replacingOccurrences(of: ".png", with: "")) else {
                throw APIError(status: .notFound, message: "no image \(id) on this server")
            }
            return Response(status: .ok, headers: [.contentType: "image/png"], body: .init(byteBuffer: ByteBuffer(bytes: item.png)))
        }
        router.post("/sdapi/v1/txt2img") { request, context in try await self.a1111Generate(request, context, img2img: false) }
        router.post("/sdapi/v1/img2img") { request, context in try await self.a1111Generate(request, context, img2img: true) }
        router.get("/sdapi/v1/sd-models") { _, _ in
            jsonResponse(self.modelNames.map { ["title": $0, "model_name": $0, "hash": NSNull(), "sha256": NSNull(), "filename": $0, "config": NSNull()] as [String: Any] })
        }
        router.get("/sdapi/v1/samplers") { _, _ in
            jsonResponse(SchedulerKind.allCases.map { ["name": $0.displayName, "aliases": [$0.rawValue], "options": [String: String]()] as [String: Any] })
        }
        router.get("/sdapi/v1/progress") { _, _ in
            let p = self.engine.progressSnapshot
            let fraction = p.steps > 0 ? Double(p.step) / Double(p.steps) : 0
            var eta = 0.0
            if let started = p.started, p.step > 0 {
                eta = Date().timeIntervalSince(started) / Double(p.step) * Double(p.steps - p.step)
            }
            return jsonResponse([
                "progress": fraction, "eta_relative": eta, "current_image": p.currentImage ?? NSNull(), "textinfo": NSNull(),
                "state": ["job_count": p.started == nil ? 0 : 1, "sampling_step": p.step, "sampling_steps": p.steps,
                          "interrupted": false, "skipped": false, "job": p.started == nil ? "" : "generate"] as [String: Any],
            ])
        }
        router.post("/sdapi/v1/interrupt") { _, _ in
            self.engine.interrupt()
            return jsonResponse([String: String]())
        }
        router.post("/sdapi/v1/png-info") { request, _ in
            let object = try await self.jsonObject(request)
            guard let image = object["image"] as? String else {
                throw APIError(status: .badRequest, message: "image: expected a base64 PNG", param: "image")
            }
            let decoded = try PNGCodec.decodeBase64(image, field: "image", maxPixels: self.config.maxImagePixels)
            var items: [String: String] = [:]
            for t in decoded.text { items[t.key] = t.value }
            return jsonResponse(["info": items["parameters"] ?? "", "items": items, "parameters": [String: String]()])
        }
    }

    // MARK: - OpenAI

    func openAIGenerations(_ request: Request, _ context: LumenRequestContext) async throws -> Response {
        let options = try openAIOptions(try await jsonObject(request))
        try validate(width: options.request.width, height: options.request.height, steps: options.request.steps, count: options.request.count)
        return try await openAIRun(options, request: request, context: context)
    }

    /// What an OpenAI images request asks for: the model, the generation and the answer's format.
    struct OpenAIOptions {
        var entry: ModelCatalog.Entry
        var request: GenerationRequest
        var format: String
    }

    /// The fields `/v1/images/generations` and `/v1/images/edits` share, from a JSON object (for
    /// edits, the form's text fields already converted to numbers where numbers are expected).
    func openAIOptions(_ o: [String: Any]) throws -> OpenAIOptions {
        guard let prompt = o["prompt"] as? String, !prompt.isEmpty else {
            throw APIError(status: .badRequest, message: "prompt: a non-empty string is required", param: "prompt", code: "missing_required_parameter")
        }
        let entry = try engine.catalog.entry(named: o["model"] as? String)
        var g = GenerationRequest(prompt: prompt)
        g.count = try int(o, "n") ?? 1
        if let size = o["size"] as? String, size != "auto" {
            let parts = size.lowercased().split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2 else {
                throw APIError(status: .badRequest, message: "size \"\(size)\": expected WIDTHxHEIGHT, e.g. 512x512", param: "size")
            }
            (g.width, g.height) = (parts[0], parts[1])
        }
        let format = (o["response_format"] as? String) ?? "b64_json"
        guard format == "b64_json" || format == "url" else {
            throw APIError(status: .badRequest, message: "response_format \"\(format)\": expected b64_json or url", param: "response_format")
        }
        if let f = o["output_format"] as? String, f != "png" {
            throw APIError(status: .badRequest, message: "output_format \"\(f)\": only png is supported", param: "output_format")
        }
        g.seed = try int(o, "seed").map { UInt64(truncatingIfNeeded: $0) } ?? UInt64.random(in: 0..<(1 << 32))
        g.steps = try int(o, "steps") ?? 25
        g.guidanceScale = try float(o, "guidance") ?? 7.5
        g.guidanceRescale = try float(o, "guidance_rescale") ?? 0
        g.eta = try float(o, "eta") ?? 0
        g.imageGuidanceScale = try float(o, "image_guidance") ?? 1.5  // InstructPix2Pix models'
        g.negativePrompt = o["negative_prompt"] as? String
        if let s = o["scheduler"] as? String {
            guard let k = SchedulerKind(rawValue: s) ?? SamplerNames.scheduler(a1111: s) else {
                throw APIError(status: .badRequest, message: "scheduler \"\(s)\": expected one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))", param: "scheduler")
            }
            g.scheduler = k
        }
        return OpenAIOptions(entry: entry, request: g, format: format)
    }

    /// Runs an OpenAI images request as a job and answers `{"created", "data": [{"b64_json"} or
    /// {"url"}]}`.
    func openAIRun(_ options: OpenAIOptions, request: Request, context: LumenRequestContext) async throws -> Response {
        let base = "http://\(request.head.authority ?? "\(config.host):\(config.port)")"
        return try await synchronousJob(request, context, model: options.entry.name, images: options.request.count) { job in
            let images: [RGBImage]
            do { images = try await engine.generate(model: options.entry, request: options.request, job: job).images } catch { throw apiError(error) }
            let result = try openAIResult(images, options: options, base: base)
            // The job's final event carries the answer, but for b64_json only its size: the
            // images went to the client in the response.
            var summary = result
            if options.format != "url" { summary["data"] = nil; summary["images"] = images.count }
            return (jsonResponse(result), summary)
        }
    }

    /// OpenAI's answer for `images`: `{"created", "data": [{"b64_json"} or {"url"}]}` (urls under
    /// `base`, the images kept in the result store).
    func openAIResult(_ images: [RGBImage], options: OpenAIOptions, base: String) throws -> [String: Any] {
        let g = options.request
        var data: [[String: Any]] = []
        for image in images {
            let png = try PNGCodec.encode(image)
            if options.format == "url" {
                let id = results.add(png: png, parameters: ["prompt": g.prompt, "seed": String(g.seed)])
                data.append(["url": "\(base)/v1/images/files/\(id).png"])
            } else {
                data.append(["b64_json": png.base64EncodedString()])
            }
        }
        return ["created": Int(Date().timeIntervalSince1970), "data": data]
    }

    // MARK: - AUTOMATIC1111

    func a1111Generate(_ request: Request, _ context: LumenRequestContext, img2img: Bool) async throws -> Response {
        let o = try await jsonObject(request)
        let prompt = (o["prompt"] as? String) ?? ""
        let negative = (o["negative_prompt"] as? String) ?? ""
        let entry = try engine.catalog.entry(named: (o["override_settings"] as? [String: Any])?["sd_model_checkpoint"] as? String)
        var g = GenerationRequest(prompt: prompt)
        g.promptSyntax = .a1111  // A1111's API reads prompts as A1111 does; the OpenAI API keeps the library's plain text
        g.negativePrompt = negative
        g.steps = try int(o, "steps") ?? 20
        g.guidanceScale = try float(o, "cfg_scale") ?? 7
        g.width = try int(o, "width") ?? (img2img ? nil : 512)
        g.height = try int(o, "height") ?? (img2img ? nil : 512)
        let batch = try int(o, "batch_size") ?? 1
        let iterations = try int(o, "n_iter") ?? 1
        g.count = batch
        let samplerName = (o["sampler_name"] as? String) ?? (o["sampler_index"] as? String) ?? "Euler a"
        guard let kind = SamplerNames.scheduler(a1111: samplerName) else {
            throw APIError(status: .badRequest, message: "sampler_name \"\(samplerName)\": expected one of \(SchedulerKind.allCases.map(\.displayName).joined(separator: ", ")) (GET /sdapi/v1/samplers)", param: "sampler_name")
        }
        g.scheduler = kind
        // A1111's eta is DDIM's (as diffusers') and its ancestral samplers' noise share, which
        // Lumen's ancestral schedulers (diffusers') do not have: DDIM and TCD read it.
        g.eta = try float(o, "eta") ?? 0
        let seedValue = try int(o, "seed") ?? -1
        let seed: UInt64 = seedValue < 0 ? UInt64.random(in: 0..<(1 << 32)) : UInt64(seedValue)
        let maskInfo: String  // what the mask fields add to the infotext (Routes+A1111Inpaint.swift)
        if img2img {
            guard let inits = o["init_images"] as? [String], let first = inits.first else {
                throw APIError(status: .badRequest, message: "init_images: expected a list with one base64 PNG", param: "init_images")
            }
            let d = try PNGCodec.decodeBase64(first, field: "init_images[0]", maxPixels: config.maxImagePixels)
            g.initImage = InitImage(width: d.image.width, height: d.image.height, rgb: d.normalized)
            g.strength = try float(o, "denoising_strength") ?? 0.75
            if g.width == nil { g.width = d.image.width }
            if g.height == nil { g.height = d.image.height }
            maskInfo = try applyA1111Mask(o, to: &g)
        } else { maskInfo = "" }
        try validate(width: g.width, height: g.height, steps: g.steps, count: batch)
        if iterations < 1 || iterations * batch > config.maxImagesPerRequest {
            throw APIError(status: .badRequest, message: "n_iter \(iterations) × batch_size \(batch): expected at most \(config.maxImagesPerRequest) images", param: "n_iter")
        }
        let taskID = o["force_task_id"] as? String
        return try await synchronousJob(request, context, preferredID: taskID, idParam: "force_task_id", model: entry.name,
                                        images: iterations * batch) { job in
        var images: [String] = []
        var seeds: [UInt64] = []
        var infotexts: [String] = []
        for it in 0..<iterations {
            var r = g
            r.seed = seed &+ UInt64(it * batch)
            let result: Engine.Output
            do { result = try await engine.generate(model: entry, request: r, job: job, firstImage: it * batch) } catch { throw apiError(error) }
            for (i, image) in result.images.enumerated() {
                var text = prompt
                if !negative.isEmpty { text += "\nNegative prompt: \(negative)" }
                text += "\nSteps: \(r.steps), Sampler: \(kind.displayName), CFG scale: \(r.guidanceScale), Seed: \(r.seed), "
                    + "Size: \(result.pipelineInfo.width)x\(result.pipelineInfo.height), Model: \(entry.name)"
                if img2img { text += ", Denoising strength: \(r.strength)" + maskInfo }
                if batch > 1 { text += ", Batch pos: \(i)" }
                let png = try PNGCodec.encode(image, text: [("parameters", text)])
                _ = results.add(png: png, parameters: ["prompt": prompt, "seed": String(r.seed), "infotext": text])
                images.append(png.base64EncodedString())
                seeds.append(r.seed)
                infotexts.append(text)
            }
        }
        let info: [String: Any] = [
            "prompt": prompt, "negative_prompt": negative, "seed": seeds.first ?? seed, "all_seeds": seeds,
            "subseed": -1, "width": g.width ?? 0, "height": g.height ?? 0, "sampler_name": kind.displayName,
            "cfg_scale": g.guidanceScale, "steps": g.steps, "batch_size": batch, "sd_model_name": entry.name,
            "infotexts": infotexts,
        ]
        let infoText = String(decoding: try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys]), as: UTF8.self)
        var parameters = o
        parameters.removeValue(forKey: "init_images")
        parameters.removeValue(forKey: "mask")
        return (jsonResponse(["images": images, "parameters": parameters, "info": infoText]),
                ["images": images.count, "seeds": seeds])
        }
    }

    // MARK: - Fields

    func int(_ o: [String: Any], _ key: String) throws -> Int? {
        guard let v = o[key], !(v is NSNull) else { return nil }
        if let n = v as? NSNumber {
            let d = n.doubleValue
            if d.isFinite, d == d.rounded(), d.magnitude < 1e15 { return Int(d) }
        }
        throw APIError(status: .badRequest, message: "\(key): expected an integer", param: key)
    }

    func float(_ o: [String: Any], _ key: String) throws -> Float? {
        guard let v = o[key], !(v is NSNull) else { return nil }
        if let n = v as? NSNumber, n.doubleValue.isFinite { return n.floatValue }
        throw APIError(status: .badRequest, message: "\(key): expected a number", param: key)
    }
}
