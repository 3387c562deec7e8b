import Foundation
import Kernels
import ModelFormat

extension ForwardPass {
    /// The MoE block: router scores → (group-limited) top-k → renormalised and/or scaled weights
    /// (`Routing.route`) → weighted SwiGLU experts, plus the shared expert: Qwen2-MoE's behind a
    /// sigmoid gate, DeepSeek's added as is. Tokens are grouped by expert so that each
    /// expert runs once over all of its tokens (a matrix product in prefill, not a matvec each).
    func moe(_ x: [Float], count: Int, layer: Int) -> [Float] {
        let config = model.config
        let hidden = config.hiddenSize, experts = config.expertCount
        observer?.moeInput(layer: layer, hidden: x, count: count)
        let logits = Kernels.linear(x, tokens: count, matrix: model.matrix(.router(layer: layer)))
        var assigned = [[(token: Int, weight: Float)]](repeating: [], count: experts)
        let bias = config.routing.correctionBias ? model.weight(.routerBias(layer: layer)) : nil
        let removed = model.removedMasks[layer]
        for t in 0..<count {
            let routed = Routing.route(
                logits[(t * experts)..<((t + 1) * experts)], rule: config.routing, bias: bias, removed: removed)
            let probabilities = routed.scores, chosen = routed.experts
            var weights = routed.weights
            observer?.routed(layer: layer, token: t, probabilities: probabilities, experts: chosen, weights: weights)
            var kept = chosen
            if let pruner {
                let flags = x.withUnsafeBufferPointer {
                    pruner.keep(
                        layer: layer, hidden: UnsafeBufferPointer(rebasing: $0[(t * hidden)..<((t + 1) * hidden)]),
                        probabilities: probabilities, experts: chosen, weights: weights)
                }
                precondition(
                    flags.count == chosen.count && flags.contains(true), "a pruner must keep at least one expert")
                if flags.contains(false) {
                    // The kept experts' weights are rescaled to the full top-k's sum.
                    let total = weights.reduce(0, +)
                    kept = zip(chosen, flags).filter(\.1).map(\.0)
                    let keptWeights = zip(weights, flags).filter(\.1).map(\.0)
                    let keptTotal = keptWeights.reduce(0, +)
                    weights = keptWeights.map { keptTotal > 0 ? $0 * total / keptTotal : $0 }
                }
            }
            expertsRun[layer] += kept.count
            for (expert, weight) in zip(kept, weights) { assigned[expert].append((t, weight)) }
        }
        tokensRouted[layer] += count
        var output = [Float](repeating: 0, count: count * hidden)
        let chosen = (0..<experts).filter { !assigned[$0].isEmpty }
        let matrices = chosen.map {
            (
                gate: model.matrix(.expertGate(layer: layer, expert: $0)),
                up: model.matrix(.expertUp(layer: layer, expert: $0)),
                down: model.matrix(.expertDown(layer: layer, expert: $0))
            )
        }
        let sharedExpert =
            config.sharedExpertIntermediateSize > 0
            ? (
                gate: model.matrix(.sharedExpertGate(layer: layer)), up: model.matrix(.sharedExpertUp(layer: layer)),
                down: model.matrix(.sharedExpertDown(layer: layer))
            ) : nil
        // A decode step: every chosen expert (and the shared one) sees the one token, so they run
        // together (one parallel region for their gates and ups, one for their downs).
        let together =
            count == 1 ? Kernels.swiglus(x, tokens: 1, experts: matrices + (sharedExpert.map { [$0] } ?? [])) : nil
        for (index, expert) in chosen.enumerated() {
            let tokens = assigned[expert]
            let result: (activations: [Float], output: [Float])
            if let together {
                result = together[index]
            } else {
                var rows = [Float](repeating: 0, count: tokens.count * hidden)
                for (row, entry) in tokens.enumerated() {
                    for i in 0..<hidden { rows[row * hidden + i] = x[entry.token * hidden + i] }
                }
                result = Kernels.swiglus(rows, tokens: tokens.count, experts: [matrices[index]])[0]
            }
            observer?.expertActivations(
                layer: layer, expert: expert, tokens: tokens.map(\.token), activations: result.activations)
            let y = result.output
            observer?.expertOutputs(layer: layer, expert: expert, tokens: tokens.map(\.token), outputs: y)
            for (row, entry) in tokens.enumerated() {
                for i in 0..<hidden { output[entry.token * hidden + i] += entry.weight * y[row * hidden + i] }
            }
        }
        if let sharedExpert {
            let shared =
                together?.last?.output ?? Kernels.swiglus(x, tokens: count, experts: [sharedExpert])[0].output
            if config.sharedExpertGated {
                let gates = Kernels.linear(x, tokens: count, matrix: model.matrix(.sharedExpertScale(layer: layer)))
                for t in 0..<count {
                    let gate = Kernels.sigmoid(gates[t])
                    for i in 0..<hidden { output[t * hidden + i] += gate * shared[t * hidden + i] }
                }
            } else {
                for i in output.indices { output[i] += shared[i] }
            }
        }
        return output
    }

    /// `down(silu(gate(x)) ⊙ up(x))`.
    func swiglu(
        _ x: [Float], count: Int, gate: TensorRole, up: TensorRole, down: TensorRole, width: Int,
        activations: ([Float]) -> Void = { _ in }
    ) -> [Float] {
        Kernels.swiglu(
            x, tokens: count, gate: model.matrix(gate), up: model.matrix(up), down: model.matrix(down),
            activations: activations)
    }
}
