import Foundation
import ModelFormat

/// What the packer needs from an allocation report (format `pmq-allocation` v1, docs/FORMATS.md §2, written by
/// `pmq solve`): a width per expert and the group size the profile measured with. Read from the
/// JSON, not from PMQSolver's types (the report is the contract between the two).
public struct AllocationPlan: Sendable, Equatable {
    /// Width of every expert: `widths[layer]![expert]`.
    public var widths: [Int: [Int: Int]]
    public var groupSize: Int
    /// The calibration fingerprint of the profile the widths were solved from (nil when unknown).
    public var calibration: String?

    public init(widths: [Int: [Int: Int]], groupSize: Int, calibration: String? = nil) {
        self.widths = widths
        self.groupSize = groupSize
        self.calibration = calibration
    }

    /// Every expert of every MoE layer at `bits`.
    public static func uniform(bits: Int, config: MoEModelConfig, groupSize: Int) -> AllocationPlan {
        var widths: [Int: [Int: Int]] = [:]
        for layer in 0..<config.layerCount where config.moeLayers[layer] {
            widths[layer] = Dictionary(uniqueKeysWithValues: (0..<config.expertCount).map { ($0, bits) })
        }
        return AllocationPlan(widths: widths, groupSize: groupSize)
    }

    public static func read(path: String) throws -> AllocationPlan {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelFormatError(file: path, "cannot read")
        }
        try StrictJSON.validate(data, file: path)
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelFormatError(file: path, "not a JSON object")
        }
        guard object["format"] as? String == "pmq-allocation" else {
            throw ModelFormatError(file: path, "not a pmq-allocation report (format field)")
        }
        guard let version = jsonInteger(object["version"], in: 0...Int.max), version == 1 else {
            throw ModelFormatError(file: path, "unsupported version (this pmq reads version 1)")
        }
        guard let parameters = object["parameters"] as? [String: Any],
            let groupSize = jsonInteger(parameters["groupSize"], in: 1...PackedLayout.maximumGroupSize)
        else {
            throw ModelFormatError(
                file: path,
                "parameters.groupSize is missing or not an integer from 1 to \(PackedLayout.maximumGroupSize)")
        }
        guard let layers = object["layers"] as? [[String: Any]] else {
            throw ModelFormatError(file: path, "layers is missing or not an array")
        }
        var widths: [Int: [Int: Int]] = [:]
        for (position, layer) in layers.enumerated() {
            guard let index = jsonInteger(layer["index"], in: 0...Int(Int32.max)),
                let experts = layer["experts"] as? [[String: Any]]
            else {
                throw ModelFormatError(file: path, "layers[\(position)] needs an integer index and an experts array")
            }
            var row: [Int: Int] = [:]
            for (slot, expert) in experts.enumerated() {
                guard let e = jsonInteger(expert["index"], in: 0...Int(Int32.max)),
                    let bits = jsonInteger(expert["bits"], in: 0...8), [0, 1, 2, 3, 4, 8].contains(bits)
                else {
                    throw ModelFormatError(
                        file: path,
                        "layers[\(position)].experts[\(slot)] needs an integer index and bits in 0 (removed), 1, 2, 3, "
                            + "4, 8")
                }
                guard row.updateValue(bits, forKey: e) == nil else {
                    throw ModelFormatError(file: path, "layer \(index) lists expert \(e) twice")
                }
            }
            guard widths.updateValue(row, forKey: index) == nil else {
                throw ModelFormatError(file: path, "layer \(index) is listed twice")
            }
        }
        let calibration = parameters["calibration"]
        guard calibration == nil || calibration is String else {
            throw ModelFormatError(file: path, "parameters.calibration is not a string")
        }
        return AllocationPlan(widths: widths, groupSize: groupSize, calibration: calibration as? String)
    }

    /// Checks that the plan names every expert of every MoE layer of `config`, and nothing else.
    public func validate(against config: MoEModelConfig, file: String) throws {
        for layer in 0..<config.layerCount where config.moeLayers[layer] {
            guard let row = widths[layer] else {
                throw ModelFormatError(file: file, "has no widths for MoE layer \(layer)")
            }
            guard Set(row.keys) == Set(0..<config.expertCount) else {
                throw ModelFormatError(
                    file: file,
                    "layer \(layer) lists experts \(row.keys.sorted().prefix(4))…, the model has "
                        + "\(config.expertCount)")
            }
            let removed = row.values.filter { $0 == 0 }.count
            guard config.expertCount - removed >= config.routing.topK else {
                throw ModelFormatError(
                    file: file,
                    "layer \(layer): bits 0 removes \(removed) of \(config.expertCount) experts, leaving fewer "
                        + "than the \(config.routing.topK) a token needs")
            }
        }
        for layer in widths.keys where !(0..<config.layerCount).contains(layer) || !config.moeLayers[layer] {
            throw ModelFormatError(file: file, "names layer \(layer), which is not an MoE layer of the model")
        }
    }

    /// Experts at width 0 (removed), by layer; layers without removals are absent.
    public var removedExperts: [Int: [Int]] {
        widths.compactMapValues { row in
            let removed = row.filter { $0.value == 0 }.map(\.key).sorted()
            return removed.isEmpty ? nil : removed
        }
    }

    /// Average nominal bits over the experts (equal-sized experts: a plain mean; removed ones count 0).
    public var averageBits: Double {
        let all = widths.values.flatMap(\.values)
        return all.isEmpty ? 0 : Double(all.reduce(0, +)) / Double(all.count)
    }
}
