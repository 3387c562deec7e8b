import Foundation
@testable import ModelFormat
@testable import MoERuntime
import Testing

/// `counterfactualLayer`: every row equals what the ordinary decode path gives that token when
/// only its own input to the layer differs (the tokens before it as they were).
@Suite struct CounterfactualTests {
    @Test(arguments: ["mixtral", "qwen2_moe", "deepseek_v3", "deepseek_v2"])
    func eachRowIsThatTokensDecodeWithOnlyItsInputChanged(architecture: String) throws {
        let model = try MoEModel(directory: ForwardPassTests.fixtures.appendingPathComponent(architecture).path)
        let config = model.config
        let (n, hidden, layers) = (11, config.hiddenSize, config.layerCount)
        let ids = (0..<n).map { ($0 * 7 + 3) % config.vocabSize }
        let session = ForwardPass(model: model)
        var x = session.embed(ids)
        var outputs: [[Float]] = []
        for layer in 0..<layers {
            session.forwardLayer(layer, &x, count: n)
            outputs.append(x)
        }
        // Unperturbed input: the batched pass again.
        var same = outputs[0]
        for layer in 1..<layers { session.counterfactualLayer(layer, &same, count: n) }
        #expect(zip(same, outputs[layers - 1]).map { abs($0 - $1) }.max()! <= 1e-5)

        var generator = SplitMix64(seed: 7)
        var perturbed = outputs[0]
        for i in perturbed.indices { perturbed[i] += 0.3 * Float(generator.gaussian()) }
        var counterfactual = perturbed
        for layer in 1..<layers { session.counterfactualLayer(layer, &counterfactual, count: n) }
        // The session's cache is untouched: the unperturbed replay still matches.
        var again = outputs[0]
        for layer in 1..<layers { session.counterfactualLayer(layer, &again, count: n) }
        #expect(again == same)

        var changed = 0
        for t in 0..<n {
            let reference = ForwardPass(model: model)
            if t > 0 { _ = try reference.logits(Array(ids[0..<t])) } // the unperturbed prefix, position t next
            var row = Array(perturbed[(t * hidden)..<((t + 1) * hidden)])
            for layer in 1..<layers { reference.forwardLayer(layer, &row, count: 1) }
            let mine = counterfactual[(t * hidden)..<((t + 1) * hidden)]
            let worst = zip(row, mine).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-4, "token \(t): max |Δ| = \(worst)")
            if zip(mine, outputs[layers - 1][(t * hidden)..<((t + 1) * hidden)]).contains(where: { abs($0 - $1) > 1e-3 }
            ) {
                changed += 1
            }
        }
        #expect(changed == n, "the perturbation must reach every token's output")
    }
}
