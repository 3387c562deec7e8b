import Foundation
import Testing
@testable import ModelFormat
@testable import PMQSolver

/// PMQ's default cost: each expert's routing-weighted output error, priced by its layer's measured
/// loss at that width (the loss curve).
@Suite struct OutputImportanceTests {
    /// Two layers of 3 equal experts with output errors at widths 1, 2, 3 and measured curves.
    static func profile(curves: Bool = true, outputErrors: Bool = true) -> Profile {
        // `layerDelta[l][w]`: measured ΔNLL with all of layer l at width w (layer 1's 3-bit point is
        // noise below its 4-bit-free neighbour: made non-increasing by the cost model).
        let layerDelta: [[Int: Double]] = [[1: 0.9, 2: 0.2, 3: 0.05], [1: 0.3, 2: 0.01, 3: 0.02]]
        let outputs: [[Double]] = [[8, 4, 1], [2, 1, 1]] // expert e's share of its layer's error
        let layers = (0..<2).map { layer -> Profile.Layer in
            let experts = (0..<3).map { expert -> Profile.Expert in
                let scale = outputs[layer][expert]
                let output: [Int: Double] = [1: 16 * scale, 2: 4 * scale, 3: scale]
                // The MC-MoE error deliberately disagrees (expert order reversed).
                let error: [Int: Double] = [1: 16 / scale, 2: 4 / scale, 3: 1 / scale]
                let bytes: [Int: Int64] = [1: 200, 2: 300, 3: 420]
                return Profile.Expert(
                    index: expert, params: 1000, freq: 1, mass: 1, error: WidthMap(error), bytes: WidthMap(bytes),
                    outputError: outputErrors ? WidthMap(output) : nil)
            }
            return Profile.Layer(
                index: layer, experts: experts,
                sensitivity: .init(
                    width: 2, deltaNLL: layerDelta[layer][2]!, byWidth: curves ? WidthMap(layerDelta[layer]) : nil))
        }
        return Profile(
            model: .init(name: "t", architecture: "qwen3_moe"), calibration: .init(tokens: 0, description: ""),
            widths: [1, 2, 3], groupSize: 128, layers: layers)
    }

    /// A layer all at width w costs exactly its measured (non-increasing) loss at w, shared among
    /// its experts in proportion to their output errors.
    @Test func aWholeLayerAtOneWidthCostsItsMeasuredLoss() throws {
        let problem = try CostModel().makeProblem(Self.profile(), budget: try Budget.parseBits("2"))
        let expected: [[Int: Double]] = [[1: 0.9, 2: 0.2, 3: 0.05], [1: 0.3, 2: 0.02, 3: 0.02]]
        for layer in 0..<2 {
            let items = problem.items.filter { $0.layer == layer }
            for (position, width) in [1, 2, 3].enumerated() {
                let total = items.reduce(0) { $0 + $1.options[position].cost }
                #expect(abs(total - expected[layer][width]!) < 1e-12, "layer \(layer) width \(width): \(total)")
                #expect(items.allSatisfy { $0.options[position].width == width })
            }
            // Shares follow the output errors (8:4:1 in layer 0).
            let shares = items.map { $0.options[1].cost }
            #expect(abs(shares[0] / shares[2] - (layer == 0 ? 8 : 2)) < 1e-9)
        }
    }

    /// Brute force over all 3^6 assignments: the solver's optimum is the cheapest feasible one,
    /// and it follows the output errors, not MC-MoE's.
    @Test func solverOptimumMatchesEnumeration() throws {
        let budget = try Budget.parseBits("2")
        for model in [CostModel(), CostModel(importance: .measured)] {
            let problem = try model.makeProblem(Self.profile(), budget: budget)
            var best = Double.infinity
            for code in 0..<729 {
                var rest = code
                let choice = problem.items.map { _ in
                    defer { rest /= 3 }
                    return rest % 3
                }
                if problem.isFeasible(choice) { best = min(best, problem.objective(choice)) }
            }
            let allocation = try Allocator.solve(problem)
            #expect(abs(allocation.objective - best) <= 1e-12 * max(1, best))
        }
        let output = try Allocator.solve(try CostModel().makeProblem(Self.profile(), budget: budget)).choice
        // Layer 0's largest-error expert 0 is never narrower than its smallest-error expert 2.
        #expect(output[0] >= output[2])
    }

    /// `monotoneCurve = false`: each width priced at the loss measured there, even where a wider
    /// width measured worse (layer 1: 0.01 nats at 2 bits, 0.02 at 3).
    @Test func curveAsMeasured() throws {
        var model = CostModel()
        model.monotoneCurve = false
        let problem = try model.makeProblem(Self.profile(), budget: try Budget.parseBits("2"))
        let layer1 = problem.items.filter { $0.layer == 1 }
        for (position, expected) in [0.3, 0.01, 0.02].enumerated() {
            let total = layer1.reduce(0) { $0 + $1.options[position].cost }
            #expect(abs(total - expected) < 1e-12)
        }
    }

    @Test func withoutTheCurveOneRatioAtTheReferenceWidth() throws {
        let problem = try CostModel().makeProblem(Self.profile(curves: false), budget: try Budget.parseBits("2"))
        let layer0 = problem.items.filter { $0.layer == 0 }
        // λ = ΔNLL(2) / Σ output(2) = 0.2 / (4 · 13), the same for every width.
        let lambda = 0.2 / 52
        #expect(abs(layer0[0].options[0].cost - lambda * 16 * 8) < 1e-12)
        #expect(abs(layer0[0].options[2].cost - lambda * 8) < 1e-12)
    }

    @Test func profilesWithoutOutputErrorsFallBackToMCMoE() throws {
        let profile = Self.profile(outputErrors: false)
        let model = CostModel()
        #expect(model.resolved(for: profile).importance == .measured)
        let fallback = try model.makeProblem(profile, budget: try Budget.parseBits("2"))
        let explicit = try CostModel(importance: .measured).makeProblem(profile, budget: try Budget.parseBits("2"))
        #expect(fallback.items.map { $0.options.map(\.cost) } == explicit.items.map { $0.options.map(\.cost) })
        #expect(CostModel().resolved(for: Self.profile()).importance == .output)
    }
}
