import Foundation
import Kernels
import MoERuntime
import ModelFormat

/// `pmq bench runtime`: prefill and decode tokens/s, peak RSS and weight streaming rate of a model in
/// pmq's runtime, against the scalar reference kernels and the machine's memory bandwidth.
public struct RuntimeBenchmark {
    public var model: String
    public var prefill: Int = 128
    public var decode: Int = 32
    public var repeats: Int = 3
    public var skipReference = false
    /// Decode with int8 activations (`Kernels.int8Activations`), as `pmq generate` does by default.
    public var int8Activations = true
    /// Hold attention and an untied head as packed linears of this width (`quantizeAttentionAndHead`);
    /// 16: as stored; nil: 8 for packed models, as stored otherwise (as `pmq generate`).
    public var attentionBits: Int?
    /// Hold FP8 linears as f32 dequantized at load, not FP8 widened by the kernels.
    public var dequantizeFP8 = false
    /// MLA models: cache the latent (absorbed attention) or every head's expanded key and value.
    public var latentCache = ForwardPass.latentCacheDefault

    public init(model: String) {
        self.model = model
    }

    public func run(emit: (String) -> Void) throws {
        try Kernels.$int8Activations.withValue(int8Activations) { try benchmark(emit: emit) }
    }

    func benchmark(emit: (String) -> Void) throws {
        let loaded = try MoEModel(directory: model, dequantizeFP8: dequantizeFP8)
        if let attentionBits = attentionBits ?? (loaded.quantization != nil ? 8 : nil), attentionBits < 16 {
            let change = loaded.quantizeAttentionAndHead(bits: attentionBits)
            emit(
                String(
                    format: "attention and head at %d bits: %d matrices, %.1f MB → %.1f MB", attentionBits,
                    change.matrices, Double(change.bytesBefore) / 1e6, Double(change.bytesAfter) / 1e6))
        }
        let config = loaded.config
        let tokens = (0..<prefill).map { ($0 * 7919 + 13) % config.vocabSize }
        // Bytes of the weights one decode token reads, as held (f32, bf16 or packed): attention,
        // router, top-k experts (an average expert of the layer), shared or dense MLP, head.
        func bytes(_ role: TensorRole) -> Double { Double(loaded.matrix(role).byteCount) }
        var bytesPerToken = bytes(config.tieWordEmbeddings ? .embeddings : .lmHead)
        for layer in 0..<config.layerCount {
            bytesPerToken += TensorRole.attentionMatrices(config, layer: layer).map(bytes).reduce(0, +)
            if config.moeLayers[layer] {
                bytesPerToken += bytes(.router(layer: layer))
                let experts = (0..<config.expertCount).map {
                    TensorRole.expertLinears(layer: layer, expert: $0).map(bytes).reduce(0, +)
                }
                bytesPerToken += Double(config.routing.topK) * experts.reduce(0, +) / Double(config.expertCount)
                if config.sharedExpertIntermediateSize > 0 {
                    bytesPerToken += [
                        TensorRole.sharedExpertGate(layer: layer), .sharedExpertUp(layer: layer),
                        .sharedExpertDown(layer: layer),
                    ].map(bytes).reduce(0, +)
                }
            } else {
                bytesPerToken += [
                    TensorRole.denseGate(layer: layer), .denseUp(layer: layer), .denseDown(layer: layer),
                ].map(bytes).reduce(0, +)
            }
        }
        let bytesPerWeight = Double(loaded.weightBytes) / Double(loaded.parameterCount)

        var cacheBytesPerPosition = 0
        func measure() throws -> (prefill: Double, decode: Double) {
            var prefillRates: [Double] = [], decodeRates: [Double] = []
            for _ in 0..<max(1, repeats) {
                let session = ForwardPass(model: loaded, latentCache: latentCache)
                var start = ContinuousClock.now
                _ = try session.logits(tokens)
                prefillRates.append(Double(prefill) / seconds(since: start))
                start = ContinuousClock.now
                for step in 0..<decode { _ = try session.logits([(step * 31) % config.vocabSize]) }
                decodeRates.append(Double(decode) / seconds(since: start))
                cacheBytesPerPosition = session.cacheBytes / max(1, session.position)
            }
            return (prefillRates.sorted()[prefillRates.count / 2], decodeRates.sorted()[decodeRates.count / 2])
        }
        let fast = try measure()
        let peakRSS = Evaluation.peakResidentBytes() // before the bandwidth probe's 1 GB buffer
        let bandwidth = MemoryBandwidth.measure()
        emit(
            "model \(model): \(config.architecture.rawValue), \(config.layerCount) layers, hidden "
                + "\(config.hiddenSize), \(config.expertCount) experts of \(config.expertIntermediateSize), "
                + "top-\(config.routing.topK)"
        )
        emit(String(format: "memory read bandwidth (all cores): %.1f GB/s", bandwidth / 1e9))
        emit(
            "packed linears' activations: "
                + (int8Activations
                    ? "int8 ("
                        + (CPUFeatures.vnni
                            ? "AVX-512 VNNI, decode and prefill" : "AVX2, decode and prefill")
                        + "; --exact-activations for float)" : "float (exact)"))
        emit(
            String(
                format:
                    "SIMD kernels:   prefill %8.1f tokens/s   decode %7.2f tokens/s   streaming %.2f GB/s = "
                    + "%.0f%% of bandwidth",
                fast.prefill, fast.decode, fast.decode * bytesPerToken / 1e9,
                100 * fast.decode * bytesPerToken / bandwidth))
        if !skipReference {
            let reference = try Kernels.$useReferenceKernels.withValue(true) { try measure() }
            emit(
                String(
                    format:
                        "scalar kernels: prefill %8.1f tokens/s   decode %7.2f tokens/s   (SIMD speed-up: "
                        + "prefill %.1f×, decode %.1f×)",
                    reference.prefill, reference.decode, fast.prefill / reference.prefill,
                    fast.decode / reference.decode))
        }
        emit(
            String(
                format:
                    "peak RSS %.1f MB (weights in memory: %.1f MB, %.2f bytes per weight; a decode token reads "
                    + "%.1f MB)",
                Double(peakRSS) / 1e6, Double(loaded.weightBytes) / 1e6, bytesPerWeight, bytesPerToken / 1e6))
        let cacheKind =
            config.latentAttention == nil ? "keys and values" : latentCache ? "MLA latents" : "MLA expanded heads"
        emit(
            "KV cache (\(cacheKind)): \(cacheBytesPerPosition) bytes per position over \(config.layerCount) layers, "
                + "\(prefill + decode) positions at the end")
    }
}
