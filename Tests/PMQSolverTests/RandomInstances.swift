import Foundation
import ModelFormat
import PMQSolver

/// Seeded random small profiles, varied in every way the solver cares about: layer and expert
/// counts, width sets, unequal expert sizes, zero frequencies, errors that do not fall with width.
struct InstanceGenerator {
    var generator: SplitMix64
    init(state: UInt64) { generator = SplitMix64(seed: state) }

    mutating func next() -> UInt64 { generator.next() }

    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    mutating func unit() -> Double { Double(next() >> 11) / 9_007_199_254_740_992 }

    mutating func widths() -> [Int] {
        let all = [1, 2, 3, 4, 8]
        let count = int(1...4)
        var chosen = Set<Int>()
        while chosen.count < count { chosen.insert(all[int(0...4)]) }
        return chosen.sorted()
    }

    /// At most `maxAssignments` joint assignments so that enumeration stays quick.
    mutating func profile(maxAssignments: Int = 20_000) -> Profile {
        let widths = widths()
        var layerCount = int(1...3)
        var perLayer = int(1...4)
        while pow(Double(widths.count), Double(layerCount * perLayer)) > Double(maxAssignments) {
            if perLayer > 1 { perLayer -= 1 } else { layerCount -= 1 }
        }
        let equalSizes = int(0...2) == 0
        var layers: [Profile.Layer] = []
        for layer in 0..<layerCount {
            var experts: [Profile.Expert] = []
            for expert in 0..<perLayer {
                let params = equalSizes ? 4096 * 3 : Int64(int(1...64)) * 1024
                var error: [Int: Double] = [:]
                var bytes: [Int: Int64] = [:]
                var previous = unit() * 100 + 1
                for width in widths {
                    // Mostly falling with width, sometimes not; sometimes exactly tied.
                    let factor = int(0...9) == 0 ? 1.0 + unit() : (int(0...9) == 0 ? 1.0 : unit())
                    previous *= factor
                    error[width] = previous
                    let groups = Int64((params / 3 + 127) / 128)
                    bytes[width] = params * Int64(width) / 8 + groups * 6 * Int64(1 + width % 3)
                }
                let freq = int(0...5) == 0 ? 0 : unit() * 10
                experts.append(
                    .init(
                        index: expert, params: params, freq: freq, mass: freq * (0.5 + unit()), error: WidthMap(error),
                        bytes: WidthMap(bytes)))
            }
            layers.append(.init(index: layer, experts: experts))
        }
        return Profile(
            model: .init(name: "random", architecture: "mixtral"),
            calibration: .init(tokens: 0, description: "random"), widths: widths, groupSize: 128, layers: layers)
    }

    /// A budget between slightly below the lightest and slightly above the heaviest assignment.
    mutating func budget(for profile: Profile, bytes: Bool) -> Budget {
        let widths = profile.widths
        if bytes {
            let lightest = profile.layers.flatMap(\.experts).reduce(Int64(0)) { $0 + $1.bytes[widths.first!]! }
            let heaviest = profile.layers.flatMap(\.experts).reduce(Int64(0)) { $0 + $1.bytes[widths.last!]! }
            let span = Double(heaviest - lightest)
            return .bytes(max(1, lightest + Int64((unit() * 1.2 - 0.1) * span)))
        }
        let low = Double(widths.first!), high = Double(widths.last!)
        let value = low + (unit() * 1.2 - 0.1) * (high - low)
        let hundredths = max(1, Int128((value * 100).rounded()))
        return .bits(numerator: hundredths, denominator: 100)
    }
}
