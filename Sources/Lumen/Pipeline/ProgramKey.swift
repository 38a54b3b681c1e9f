/// A network the pipeline compiled, by stage and shape: the key of its program cache, so that
/// a stage's programs are found and let go of by stage, never by the spelling of a string.
enum ProgramKey: Hashable, Sendable {
    /// The text encoder(s) for `count` texts.
    case text(count: Int, clipSkip: Int)
    /// The UNet for a batch of latents of height × width, with a context of `contextLength` tokens,
    /// taking a ControlNet's residuals as inputs when `controlled`.
    case unet(batch: Int, height: Int, width: Int, contextLength: Int, controlled: Bool)
    /// A ControlNet (by its folder) for the same shapes.
    case controlNet(path: String, batch: Int, height: Int, width: Int, contextLength: Int)
    /// The VAE decoder for latents of height × width (a whole latent or one tile).
    case decode(height: Int, width: Int)
    /// TAESD's decoder (by its path) for a batch of latents of height × width: previews and fast
    /// final decodes.
    case tinyDecode(path: String, batch: Int, height: Int, width: Int)
    /// TAESD's encoder (by its path) for an image of height × width pixels.
    case tinyEncode(path: String, height: Int, width: Int)
    /// The VAE encoder for an image of height × width pixels (mean and log-variance).
    case encode(height: Int, width: Int)
    /// The VAE encoder's moments for one tile of height × width pixels (tiled encoding).
    case encodeMoments(height: Int, width: Int)

    enum Stage: Sendable { case conditioning, imageEncoding, denoising, decoding }

    var stage: Stage {
        switch self {
        case .text: return .conditioning
        case .encode, .encodeMoments, .tinyEncode: return .imageEncoding
        case .unet, .controlNet: return .denoising
        case .decode, .tinyDecode: return .decoding
        }
    }
}
