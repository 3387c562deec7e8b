import Foundation
import ModelFormat

/// Builds an allocation's packed expert linears from a quantization cache (`pmq profile --cache`)
/// instead of running GPTQ: the cache holds every expert at every candidate width, quantized with
/// Hessians from the float model's hidden states, which is what `pmq quantize --float-propagation`
/// computes, so the packed checkpoint written from this output is byte-identical to that one.
public enum CacheAssembly {
    /// Refuses a cache whose inputs differ from the model's and from the group size and
    /// calibration fingerprint of the profile or allocation `source` (nil: not known), naming what differs.
    public static func check(
        _ cache: QuantizationCache, modelDirectory: String, config: MoEModelConfig, groupSize: Int,
        calibration: String?, source: String
    ) throws {
        var expected = cache.fingerprint
        expected.model = try ModelDigest.compute(directory: modelDirectory)
        expected.architecture = config.architecture.rawValue
        expected.groupSize = groupSize
        if let calibration { expected.calibration = calibration }
        if let difference = cache.fingerprint.difference(from: expected) {
            throw ModelFormatError(
                file: cache.directory, "was made for another \(difference) than \(modelDirectory) and \(source) need")
        }
    }

    /// The plan's expert linears read from the cache, one layer and width at a time, as
    /// `ModelQuantizer.run` would return them (`seconds`: the time to read them).
    public static func output(plan: AllocationPlan, config: MoEModelConfig, cache: QuantizationCache) throws
        -> ModelQuantizer.Output
    {
        let start = ContinuousClock.now
        var linears: [String: PackedLinear] = [:]
        try forEachLinear(plan: plan, config: config, cache: cache) { _, module, linear in linears[module] = linear }
        return .init(linears: linears, removed: plan.removedExperts, seconds: seconds(since: start))
    }

    /// Calls `body(role, module name, linear)` for every linear of every kept expert of the plan,
    /// reading each cache entry once and dropping it before the next: memory holds one entry at a time.
    public static func forEachLinear(
        plan: AllocationPlan, config: MoEModelConfig, cache: QuantizationCache,
        _ body: (TensorRole, String, PackedLinear) throws -> Void
    ) throws {
        let map = ArchitectureMap(config.architecture)
        var shapes: [TensorRole: [Int]] = [:]
        for (role, shape) in map.expectedTensors(config) { shapes[role] = shape }
        for layer in plan.widths.keys.sorted() {
            let row = plan.widths[layer]!
            for width in Set(row.values).subtracting([0]).sorted() {
                guard let entry = try cache.read(layer: layer, width: width) else {
                    let expert = row.filter { $0.value == width }.map(\.key).min()!
                    throw ModelFormatError(
                        file: cache.directory,
                        "has no \(width)-bit entry for layer \(layer) (expert \(expert) needs it); profile with "
                            + "--widths including \(width) into this cache")
                }
                for expert in row.filter({ $0.value == width }).map(\.key).sorted() {
                    for role in TensorRole.expertLinears(layer: layer, expert: expert) {
                        let module = map.moduleName(role)
                        guard let linear = entry[module] else {
                            throw ModelFormatError(
                                file: cache.entryPath(layer: layer, width: width),
                                "has no \(module) (layer \(layer), expert \(expert), \(width)-bit)")
                        }
                        guard shapes[role] == [linear.outFeatures, linear.inFeatures] else {
                            throw ModelFormatError(
                                file: cache.entryPath(layer: layer, width: width),
                                "\(module) is [\(linear.outFeatures), \(linear.inFeatures)], the model's is "
                                    + "\(shapes[role] ?? [])")
                        }
                        try body(role, module, linear)
                    }
                }
            }
        }
    }
}
