import Foundation

/// Every expert linear GPTQ-quantized at every candidate width, as `pmq profile --cache DIR` left
/// them, so that `pmq assemble` and `pmq sweep --evaluate` build packed models without running
/// GPTQ again (docs/FORMATS.md §11). `DIR/cache.json` holds the fingerprint of the inputs the
/// results depend on (model, calibration, GPTQ settings); `DIR/layer-L/W-bit.safetensors` holds
/// one layer's experts at one width in the packed checkpoint's tensor layout, written atomically
/// and only after the whole layer is quantized, so a killed run leaves whole entries only.
public struct QuantizationCache: Sendable {
    /// What the cached GPTQ results depend on. Two caches with equal fingerprints hold the same
    /// results; a cache is refused for inputs whose fingerprint differs, naming the first field.
    public struct Fingerprint: Codable, Sendable, Equatable {
        /// `ModelDigest` of the float checkpoint.
        public var model: String
        public var architecture: String
        /// The calibration tokens as the profiler used them (`CalibrationFingerprint`).
        public var calibration: String
        public var groupSize: Int
        public var dampening: Double
        public var actOrder: Bool
        public var clipSearch: Bool
        public init(
            model: String, architecture: String, calibration: String, groupSize: Int, dampening: Double,
            actOrder: Bool, clipSearch: Bool
        ) {
            self.model = model
            self.architecture = architecture
            self.calibration = calibration
            self.groupSize = groupSize
            self.dampening = dampening
            self.actOrder = actOrder
            self.clipSearch = clipSearch
        }

        /// The first field in which `other` differs, worded for an error message; nil when equal.
        public func difference(from other: Fingerprint) -> String? {
            if model != other.model { return "model (weights digest \(model), not \(other.model))" }
            if architecture != other.architecture { return "architecture (\(architecture), not \(other.architecture))" }
            if calibration != other.calibration {
                return "calibration set (\(calibration), not \(other.calibration))"
            }
            if groupSize != other.groupSize { return "group size (\(groupSize), not \(other.groupSize))" }
            if dampening != other.dampening { return "dampening (\(dampening), not \(other.dampening))" }
            if actOrder != other.actOrder { return "act-order (\(actOrder), not \(other.actOrder))" }
            if clipSearch != other.clipSearch { return "clip search (\(clipSearch), not \(other.clipSearch))" }
            return nil
        }
    }

    struct Manifest: Codable {
        var format: String
        var version: Int
        var fingerprint: Fingerprint
        /// The model directory as named when the cache was made (informational).
        var modelDirectory: String
    }

    public static let formatName = "pmq-quantization-cache"
    public static let manifestName = "cache.json"

    public let directory: String
    public let fingerprint: Fingerprint
    public let modelDirectory: String

    var manifestPath: String { (directory as NSString).appendingPathComponent(Self.manifestName) }

    /// Opens the cache in `directory`, creating it for `fingerprint` when it does not exist;
    /// an existing cache made for other inputs is refused. Safe for concurrent runs on one folder
    /// (a cluster's array tasks sharing a cache): the first manifest published stays, and every
    /// run, the others included, opens it and checks its fingerprint.
    public static func openOrCreate(directory: String, fingerprint: Fingerprint, modelDirectory: String) throws
        -> QuantizationCache
    {
        let manifest = (directory as NSString).appendingPathComponent(manifestName)
        if !FileManager.default.fileExists(atPath: manifest) {
            try create(
                directory: directory,
                manifest: Manifest(
                    format: formatName, version: 1, fingerprint: fingerprint, modelDirectory: modelDirectory))
        }
        let cache = try open(directory: directory)
        try cache.check(fingerprint)
        cache.removeStaleTemporaries()
        return cache
    }

    /// Makes `directory` a cache by publishing `manifest` unless another run did first. An existing
    /// folder must hold nothing but hidden entries, or the manifest another run has published since.
    static func create(directory: String, manifest: Manifest) throws {
        let path = (directory as NSString).appendingPathComponent(manifestName)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw ModelFormatError(file: directory, "is a file, not a cache folder")
            }
            OutputPaths.removeStaleTemporaries(in: directory)
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            // Another run's manifest, published after our first look: open that cache.
            if contents.contains(manifestName) { return }
            guard contents.allSatisfy({ $0.hasPrefix(".") }) else {
                throw ModelFormatError(file: directory, "exists without \(manifestName): not a quantization cache")
            }
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FileWriteError(file: directory, reason: (error as NSError).localizedDescription)
        }
        try AtomicFile.create(try AtomicFile.jsonData(manifest), at: path)
    }

    init(directory: String, fingerprint: Fingerprint, modelDirectory: String) {
        self.directory = directory
        self.fingerprint = fingerprint
        self.modelDirectory = modelDirectory
    }

    /// Opens an existing cache, reading its manifest strictly.
    public static func open(directory: String) throws -> QuantizationCache {
        let path = (directory as NSString).appendingPathComponent(manifestName)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelFormatError(file: path, "cannot read (is \(directory) a quantization cache from pmq profile?)")
        }
        let root = JSONField(root: try JSONValue.parse(data, file: path), file: path)
        let format = try root.member("format").string()
        guard format == formatName else {
            throw ModelFormatError(file: path, "format: \"\(format)\" is not \"\(formatName)\"")
        }
        let version = try root.member("version").integer()
        guard version == 1 else { throw ModelFormatError(file: path, "version: \(version) is not supported (1)") }
        let field = try root.member("fingerprint")
        let groupSize = try field.member("groupSize").integer()
        guard (1...Int64(PackedLayout.maximumGroupSize)).contains(groupSize) else {
            throw ModelFormatError(file: path, "fingerprint.groupSize: must be 1 to \(PackedLayout.maximumGroupSize)")
        }
        let fingerprint = Fingerprint(
            model: try field.member("model").string(), architecture: try field.member("architecture").string(),
            calibration: try field.member("calibration").string(), groupSize: Int(groupSize),
            dampening: try field.member("dampening").double(), actOrder: try field.member("actOrder").bool(),
            clipSearch: try field.member("clipSearch").bool())
        return QuantizationCache(
            directory: directory, fingerprint: fingerprint,
            modelDirectory: try root.member("modelDirectory").string())
    }

    /// Removes the entries that killed runs were writing (`.W-bit.safetensors.PID.tmp`).
    func removeStaleTemporaries() {
        OutputPaths.removeStaleTemporaries(in: directory)
        let layers = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for layer in layers where layer.hasPrefix("layer-") {
            OutputPaths.removeStaleTemporaries(in: (directory as NSString).appendingPathComponent(layer))
        }
    }

    /// Refuses a cache made for other inputs, naming what differs.
    public func check(_ expected: Fingerprint) throws {
        if let difference = fingerprint.difference(from: expected) {
            throw ModelFormatError(file: manifestPath, "made for another \(difference); use another --cache folder")
        }
    }

    public func entryPath(layer: Int, width: Int) -> String {
        (directory as NSString).appendingPathComponent("layer-\(layer)/\(width)-bit.safetensors")
    }

    public func contains(layer: Int, width: Int) -> Bool {
        FileManager.default.fileExists(atPath: entryPath(layer: layer, width: width))
    }

    /// Writes one layer's expert linears at one width (by module name), atomically.
    public func write(layer: Int, width: Int, linears: [String: PackedLinear]) throws {
        let folder = (directory as NSString).appendingPathComponent("layer-\(layer)")
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw FileWriteError(file: folder, reason: (error as NSError).localizedDescription)
        }
        try PackedLinear.writeLayer(linears, to: entryPath(layer: layer, width: width))
    }

    /// One layer's expert linears at one width, by module name; nil when the entry is absent.
    public func read(layer: Int, width: Int) throws -> [String: PackedLinear]? {
        let path = entryPath(layer: layer, width: width)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let linears = try PackedLinear.readLayer(from: path)
        for (module, linear) in linears where linear.bits != width || linear.groupSize != fingerprint.groupSize {
            throw ModelFormatError(
                file: path,
                "\(module) is \(linear.bits)-bit with groups of \(linear.groupSize), expected \(width)-bit with "
                    + "groups of \(fingerprint.groupSize)")
        }
        return linears
    }

    /// Bytes on disk (manifest and entries).
    public var byteCount: Int {
        let files = (try? FileManager.default.subpathsOfDirectory(atPath: directory)) ?? []
        return files.reduce(0) { total, name in
            let path = (directory as NSString).appendingPathComponent(name)
            return total + ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
        }
    }
}

extension PackedLinear {
    /// A set of packed linears as one safetensors file, their shapes in the metadata
    /// (`module: "bits group out in"`): the profiler's layer checkpoints and the quantization cache.
    public static func writeLayer(_ linears: [String: PackedLinear], to path: String) throws {
        var writer = SafeTensorsWriter()
        for (module, linear) in linears.sorted(by: { $0.key < $1.key }) {
            for tensor in try linear.storedTensors(module: module) {
                try writer.add(
                    tensor.name, dtype: TensorDType(rawValue: tensor.dtype)!, shape: tensor.shape, data: tensor.data)
            }
            writer.metadata[module] = "\(linear.bits) \(linear.groupSize) \(linear.outFeatures) \(linear.inFeatures)"
        }
        try writer.write(to: path)
    }

    /// Reads what `writeLayer` wrote, every linear checked as a packed checkpoint's are.
    public static func readLayer(from path: String) throws -> [String: PackedLinear] {
        let file = try SafeTensorsFile(path: path)
        var linears: [String: PackedLinear] = [:]
        for (module, shape) in file.metadata {
            let numbers = shape.split(separator: " ").compactMap { Int($0) }
            guard numbers.count == 4, numbers.allSatisfy({ (1...(1 << 40)).contains($0) }) else {
                throw ModelFormatError(file: path, "metadata for \(module) is not 'bits group out in'")
            }
            linears[module] = try PackedLinear.read(
                from: file, prefix: module, bits: numbers[0], groupSize: numbers[1],
                outFeatures: numbers[2], inFeatures: numbers[3])
        }
        return linears
    }
}

/// Identifies a float checkpoint without reading all of it: FNV-1a (64-bit) over `config.json`,
/// each safetensors file's name, size and header, and 16 evenly spaced 4 KiB blocks of its data.
/// Two checkpoints that differ only in bytes no block samples digest alike; any change of
/// config, tensor set, shapes, dtypes or sizes, and any retraining, changes the digest.
public enum ModelDigest {
    public static func compute(directory: String) throws -> String {
        var hash = FNV1a()
        let config = (directory as NSString).appendingPathComponent("config.json")
        guard let configData = FileManager.default.contents(atPath: config) else {
            throw ModelFormatError(file: config, "cannot read")
        }
        hash.add(bytes: configData)
        // Shards in `CheckpointFiles`' order (by path); each is already mapped and its header checked.
        for file in try CheckpointFiles(directory: directory).files {
            let bytes = file.fileBytes
            hash.add(bytes: (file.path as NSString).lastPathComponent.utf8)
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { hash.add(bytes: $0) }
            hash.add(bytes: bytes[8..<file.dataStart])
            let blocks = 16, block = 4096
            for index in 0..<blocks where bytes.count > file.dataStart {
                let offset = file.dataStart + (bytes.count - file.dataStart) / blocks * index
                hash.add(bytes: bytes[offset..<min(bytes.count, offset + block)])
            }
        }
        return hash.hex
    }
}
