import Foundation
import Calibration
import Kernels
import ModelFormat
import MoERuntime

/// What removing an expert (width 0) costs, in the units of `OutputErrorSample.error`: the
/// expected squared change of one token's MoE output. Removal is `Routing.route` with the expert
/// masked: the scores are unchanged, the expert is never chosen, the top-k is refilled from the
/// remaining experts and the weights follow the architecture's rule. So a token that had chosen
/// the expert now runs the next one in line, and with renormalisation every chosen expert's
/// weight changes: the change of output is `Σ_i (w'_i − w_i) · E_i(x)` over the experts chosen
/// before or after, measured on the sample of tokens routed to the expert (the only tokens whose
/// output changes), times the expert's share of the layer's tokens.
enum RemovalError {
    static func measure(model: MoEModel, layer: Int, statistics: ExpertStatistics) -> [Double?] {
        let config = model.config
        let experts = config.expertCount, hidden = config.hiddenSize
        let router = model.matrix(.router(layer: layer))
        let bias = config.routing.correctionBias ? model.weight(.routerBias(layer: layer)) : nil
        let already = model.removedMasks[layer]
        var result = [Double?](repeating: nil, count: experts)
        for expert in 0..<experts {
            guard let sample = OutputErrorSample(statistics, expert: expert) else { continue }
            let count = sample.count
            let logits = Kernels.linear(sample.inputs, tokens: count, matrix: router)
            var mask = already ?? [Bool](repeating: false, count: experts)
            mask[expert] = true
            // Per expert whose weight changes: the tokens and by how much.
            var changes: [Int: [(token: Int, delta: Float)]] = [:]
            for t in 0..<count {
                let row = logits[(t * experts)..<((t + 1) * experts)]
                let before = Routing.route(row, rule: config.routing, bias: bias, removed: already)
                let after = Routing.route(row, rule: config.routing, bias: bias, removed: mask)
                var change: [Int: Float] = [:]
                for (i, w) in zip(before.experts, before.weights) { change[i, default: 0] -= w }
                for (i, w) in zip(after.experts, after.weights) { change[i, default: 0] += w }
                for (i, delta) in change where delta != 0 { changes[i, default: []].append((t, delta)) }
            }
            var difference = [Float](repeating: 0, count: count * hidden)
            for (other, entries) in changes.sorted(by: { $0.key < $1.key }) {
                var rows = [Float](repeating: 0, count: entries.count * hidden)
                for (r, entry) in entries.enumerated() {
                    for c in 0..<hidden { rows[r * hidden + c] = sample.inputs[entry.token * hidden + c] }
                }
                let y = Kernels.swiglu(
                    rows, tokens: entries.count, gate: model.matrix(.expertGate(layer: layer, expert: other)),
                    up: model.matrix(.expertUp(layer: layer, expert: other)),
                    down: model.matrix(.expertDown(layer: layer, expert: other)))
                for (r, entry) in entries.enumerated() {
                    for c in 0..<hidden { difference[entry.token * hidden + c] += entry.delta * y[r * hidden + c] }
                }
            }
            let total = difference.reduce(0.0) { $0 + Double($1) * Double($1) }
            result[expert] = sample.share * total / Double(count)
        }
        return result
    }
}
