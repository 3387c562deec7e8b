import Foundation
import MoERuntime

/// Spreads one budget of experts per token over the MoE layers instead of keeping the same
/// fraction in each: where dropping an expert costs less (in the measured end-to-end `damage`,
/// which is in the same units at every layer — nats — drop more (`budgetDamage` when the set has it).
///
/// Each layer's trained gate ranks its calibration slots (lowest logit dropped first); the cost of
/// dropping the first `c` is the sum of their measured damage. Starting from nothing dropped, the
/// allocation repeatedly drops the next chunk (1/`chunks` of a layer's slots) from the layer whose
/// next chunk costs least per slot, until the model-wide fraction kept is `keep`; then each
/// layer's slot biases shift so its gate drops exactly its count on the calibration set.
/// Chunks, not single slots: one slot's measured damage is noisy, a chunk's mean is not.
public enum OTPBudget {
    /// The gates with shifted biases, and each layer's kept fraction of its top-k slots (top-1 included).
    public static func allocate(sets: [Int: OTPTrainingSet], gates: [Int: OTPGate], keep: Double, chunks: Int = 100)
        -> (gates: [Int: OTPGate], keptFractions: [Int: Double])
    {
        let layers = sets.keys.sorted()
        precondition(
            layers.allSatisfy { sets[$0]!.damage != nil && gates[$0] != nil },
            "a global budget needs every layer's damage and gate")
        // Per layer: gated slots' damage in the order the gate drops them, as prefix sums.
        var prefix: [Int: [Double]] = [:]
        var totalSlots = 0, gatedSlots = 0
        for layer in layers {
            let set = sets[layer]!, damage = set.budgetDamage ?? set.damage!
            let z = OTPTrainer.logits(gate: gates[layer]!, set: set)
            let order = z.indices.sorted { z[$0] < z[$1] }
            var sums = [0.0]
            sums.reserveCapacity(order.count + 1)
            for i in order { sums.append(sums.last! + Double(damage[i])) }
            prefix[layer] = sums
            totalSlots += set.count * set.slots
            gatedSlots += z.count
        }
        let toDrop = min(max(totalSlots - Int((keep * Double(totalSlots)).rounded()), 0), gatedSlots)
        var dropped = Dictionary(uniqueKeysWithValues: layers.map { ($0, 0) })
        var remaining = toDrop
        while remaining > 0 {
            var best: (layer: Int, step: Int, cost: Double)?
            for layer in layers {
                let sums = prefix[layer]!, available = sums.count - 1 - dropped[layer]!
                guard available > 0 else { continue }
                let step = min(max((sums.count - 1) / max(chunks, 1), 1), available, remaining)
                let c = dropped[layer]!
                let cost = (sums[c + step] - sums[c]) / Double(step)
                if best == nil || cost < best!.cost { best = (layer, step, cost) }
            }
            guard let choice = best else { break }
            dropped[choice.layer]! += choice.step
            remaining -= choice.step
        }
        var shifted = gates
        var fractions: [Int: Double] = [:]
        for layer in layers {
            let set = sets[layer]!
            let fraction = Double(set.count * set.slots - dropped[layer]!) / Double(set.count * set.slots)
            var gate = gates[layer]!
            let shift = OTPTrainer.biasShift(gate: gate, set: set, keep: fraction)
            for r in gate.bias.indices { gate.bias[r] += shift }
            shifted[layer] = gate
            fractions[layer] = OTPTrainer.keptFraction(gate: gate, set: set)
        }
        return (shifted, fractions)
    }
}
