import Foundation
import Calibration
import Kernels
import MoERuntime

/// OTP's `logits` training target: each token's expert outputs mapped so that their squared
/// distances measure what a change of the MoE output does to the model's next-token distribution
/// along the residual stream's direct path to the head.
///
/// A change δ of the MoE output at any layer reaches the final norm and the LM head through the
/// residual stream; to first order, ignoring the later layers' own response, the logits move by
/// `J δ` with `J = W_head · diag(g / rms(x_final))`, and the KL divergence of the next-token
/// distribution by `½ δᵀ Jᵀ (diag(p) − p pᵀ) J δ` (its Fisher metric). With `p` restricted to the
/// token's `m` most likely entries (renormalised; `m` = the hidden size, so shapes are unchanged),
/// `E'_j = diag(√p)(I − 1pᵀ) J_m E_j` gives `‖Σ d_j E'_j‖² = dᵀ Eᵀ F E d`: OTP's trainer, which only
/// sees squared distances of combined outputs, then minimises the KL instead of the output MSE.
struct LogitFisher {
    /// Per calibration token: the `m` most likely next tokens, their renormalised probabilities, and `1/rms(x_final)`.
    var top: [Int32]
    var probabilities: [Float]
    var inverseRMS: [Float]
    let m: Int
    let head: [Float]
    let normWeight: [Float]
    let hidden: Int

    /// One unpruned float pass over the windows to the head.
    init(model: MoEModel, states start: [[Float]], sequenceLength: Int) throws {
        let config = model.config
        hidden = config.hiddenSize
        m = hidden
        normWeight = model.weight(.finalNorm)
        head = (config.tieWordEmbeddings ? model.matrix(.embeddings) : model.matrix(.lmHead)).floats
        let session = ForwardPass(model: model)
        var states = start
        for layer in 0..<config.layerCount {
            try model.pin(layer: layer)
            CalibrationWindows.forward(session, layer: layer, states: &states, sequenceLength: sequenceLength)
            model.unpin(layer: layer)
        }
        top = []
        probabilities = []
        inverseRMS = []
        let eps = Float(config.rmsNormEps), vocab = config.vocabSize
        for window in states.indices {
            let logits = session.outputLogits(states[window], count: sequenceLength)
            for t in 0..<sequenceLength {
                var row = Array(logits[(t * vocab)..<((t + 1) * vocab)])
                Kernels.softmax(&row)
                let chosen = Routing.topK(row, k: min(m, vocab))
                let total = chosen.reduce(Float(0)) { $0 + row[$1] }
                top += chosen.map { Int32($0) }
                probabilities += chosen.map { row[$0] / total }
                // A vocabulary smaller than the hidden size: pad with zero-probability entries.
                top += [Int32](repeating: 0, count: m - chosen.count)
                probabilities += [Float](repeating: 0, count: m - chosen.count)
                var square: Float = 0
                for i in 0..<hidden { square += states[window][t * hidden + i] * states[window][t * hidden + i] }
                inverseRMS.append(1 / (square / Float(hidden) + eps).squareRoot())
            }
        }
    }

    /// `set` with every expert output replaced by its image `E'_j` (token order = calibration order).
    func transform(_ set: OTPTrainingSet) -> OTPTrainingSet {
        precondition(set.hiddenSize == hidden && set.count <= inverseRMS.count)
        var outputs = [Float](repeating: 0, count: set.expertOutputs.count)
        var u = [Float](repeating: 0, count: hidden), z = [Float](repeating: 0, count: m)
        let k = set.slots
        head.withUnsafeBufferPointer { head in
            for t in 0..<set.count {
                for j in 0..<k {
                    let base = (t * k + j) * hidden
                    for i in 0..<hidden { u[i] = set.expertOutputs[base + i] * normWeight[i] * inverseRMS[t] }
                    var mean: Float = 0
                    u.withUnsafeBufferPointer { u in
                        for v in 0..<m {
                            z[v] = Kernels.dot(head.baseAddress! + Int(top[t * m + v]) * hidden, u.baseAddress!, hidden)
                            mean += probabilities[t * m + v] * z[v]
                        }
                    }
                    for v in 0..<m { outputs[base + v] = probabilities[t * m + v].squareRoot() * (z[v] - mean) }
                }
            }
        }
        var mapped = set
        mapped.expertOutputs = outputs
        return mapped
    }
}
