import LumenRuntime

extension Pipeline {
    /// What the UNet is conditioned on for `request` (diffusers' `encode_prompt`), without
    /// generating: the context [rows · count, tokens, D], rows [negative, prompt] when guiding
    /// (tokens: 77, or 77 per chunk with `.a1111` prompts), and SDXL's pooled embedding [rows · count, P].
    public func promptEmbeddings(for request: GenerationRequest) throws -> (context: Tensor, pooled: Tensor?) {
        lock.lock()
        defer { lock.unlock() }
        try validate(request)
        let (width, height) = size(for: request)
        let c = try conditioning.condition(request, guided: request.guidanceScale > 1, width: width, height: height, cache: cache)
        return (c.context, c.pooled)
    }
}
