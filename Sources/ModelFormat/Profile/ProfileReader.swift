import Foundation

/// Reads and validates a `pmq-profile` v1 file (docs/FORMATS.md §1). Every problem is reported as
/// one line naming the file and the field; soft problems (errors that grow with width) come back as warnings.
public enum ProfileReader {
    public struct Result: Sendable {
        public var profile: Profile
        public var warnings: [String]
    }

    public static func read(path: String) throws -> Result {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ModelFormatError(file: path, "cannot read: \((error as NSError).localizedDescription)")
        }
        return try parse(data, file: path)
    }

    /// A valid profile is read in one streaming pass (`fastParse`); anything else goes through the
    /// document tree, whose checks name the file and field of the first problem.
    public static func parse(_ data: Data, file: String) throws -> Result {
        if let result = fastParse(data, file: file) { return result }
        return try treeParse(data, file: file)
    }

    /// What a profile says before its layers.
    struct Header {
        var model: Profile.Model
        var calibration: Profile.Calibration
        var widths: [Int]
        var groupSize: Int
    }

    /// The reader over the whole document tree: the reference of `fastParse`, and its fallback.
    public static func treeParse(_ data: Data, file: String) throws -> Result {
        let root = JSONField(root: try JSONValue.parse(data, file: file), file: file)
        guard case .object = root.value else { throw root.fail("expected a JSON object at the top level") }
        let header = try readHeader(root, file: file)
        let (layers, warnings) = try readLayers(try root.member("layers"), widths: header.widths, file: file)
        let profile = Profile(
            model: header.model, calibration: header.calibration, widths: header.widths,
            groupSize: header.groupSize, layers: layers)
        return Result(profile: profile, warnings: warnings)
    }

    /// Everything but the layers, from the top-level object.
    static func readHeader(_ root: JSONField, file: String) throws -> Header {

        let format = try root.member("format")
        guard try format.string() == Profile.formatName else {
            throw format.fail("expected \"\(Profile.formatName)\", got \"\(try format.string())\"")
        }
        let versionField = try root.member("version")
        let version = try versionField.integer()
        guard version == Int64(Profile.currentVersion) else {
            throw versionField.fail("unsupported version \(version) (this pmq reads version \(Profile.currentVersion))")
        }

        let modelField = try root.member("model")
        var topK: Int? = nil
        if let topKField = try modelField.optionalMember("topK") {
            let value = try topKField.integer()
            guard value > 0 else { throw topKField.fail("must be > 0, got \(value)") }
            topK = Int(value)
        }
        let model = Profile.Model(
            name: try modelField.member("name").string(),
            architecture: try modelField.member("architecture").string(), topK: topK)
        let calibrationField = try root.member("calibration")
        let tokensField = try calibrationField.member("tokens")
        let tokens = try tokensField.integer()
        guard tokens >= 0 else { throw tokensField.fail("must be ≥ 0, got \(tokens)") }
        let calibration = Profile.Calibration(
            tokens: Int(tokens),
            description: try calibrationField.optionalMember("description")?.string() ?? "",
            fingerprint: try calibrationField.optionalMember("fingerprint")?.string())

        let widthsField = try root.member("widths")
        var widths: [Int] = []
        for element in try widthsField.elements() {
            let width = Int(try element.integer())
            guard width == Profile.removalWidth || Profile.supportedWidths.contains(width) else {
                throw ModelFormatError(
                    file: file,
                    "width \(width): at \(element.path) is not supported (pmq packs "
                        + "\(Profile.supportedWidths.sorted().map(String.init).joined(separator: ", ")))"
                )
            }
            guard !widths.contains(width) else { throw element.fail("width \(width) is listed twice") }
            widths.append(width)
        }
        guard widths.contains(where: { $0 != Profile.removalWidth }) else {
            throw widthsField.fail("must list at least one width other than 0")
        }
        widths.sort()
        if widths.contains(Profile.removalWidth), topK == nil {
            throw ModelFormatError(
                file: file, "model.topK: missing (a profile with width 0 must say how many experts a token needs)")
        }

        let groupField = try root.member("groupSize")
        let groupSize = try groupField.integer()
        guard groupSize > 0, groupSize <= PackedLayout.maximumGroupSize else {
            throw groupField.fail("must be 1 to \(PackedLayout.maximumGroupSize), got \(groupSize)")
        }
        return Header(model: model, calibration: calibration, widths: widths, groupSize: Int(groupSize))
    }

    static func readLayers(_ layersField: JSONField, widths: [Int], file: String) throws -> (
        [Profile.Layer], [String]
    ) {
        let layerFields = try layersField.elements()
        guard !layerFields.isEmpty else { throw layersField.fail("must contain at least one layer") }
        var layers: [Profile.Layer] = []
        var seenLayers = Set<Int>()
        var warnings: [String] = []
        for layerField in layerFields {
            let indexField = try layerField.member("index")
            let layerIndex = Int(try indexField.integer())
            guard layerIndex >= 0 else { throw indexField.fail("must be ≥ 0, got \(layerIndex)") }
            guard seenLayers.insert(layerIndex).inserted else {
                throw indexField.fail("layer \(layerIndex) appears twice")
            }
            let expertsField = try layerField.member("experts")
            let expertFields = try expertsField.elements()
            guard !expertFields.isEmpty else { throw expertsField.fail("layer \(layerIndex) has no experts") }
            var experts: [Profile.Expert] = []
            var seenExperts = Set<Int>()
            for expertField in expertFields {
                let expert = try readExpert(expertField, widths: widths)
                guard seenExperts.insert(expert.index).inserted else {
                    throw try expertField.member("index").fail(
                        "expert \(expert.index) appears twice in layer \(layerIndex)")
                }
                warnings += growthWarnings(expert, layer: layerIndex, widths: widths, file: file)
                experts.append(expert)
            }
            let sensitivity = try layerField.optionalMember("sensitivity").map {
                try readSensitivity($0, widths: widths)
            }
            layers.append(Profile.Layer(index: layerIndex, experts: experts, sensitivity: sensitivity))
        }
        return (layers, warnings)
    }

    /// "error grows from … to …": the soft problem of one expert, per pair of neighbouring widths.
    static func growthWarnings(_ expert: Profile.Expert, layer: Int, widths: [Int], file: String) -> [String] {
        zip(widths, widths.dropFirst()).compactMap { lower, higher in
            guard expert.error[higher]! > expert.error[lower]! else { return nil }
            return "\(file): layer \(layer) expert \(expert.index): error grows from \(lower) to \(higher) "
                + "bits (\(expert.error[lower]!) → \(expert.error[higher]!))"
        }
    }

    static func readSensitivity(_ field: JSONField, widths: [Int]) throws -> Profile.Sensitivity {
        let widthField = try field.member("width")
        let width = Int(try widthField.integer())
        guard widths.contains(width) else {
            throw widthField.fail("\(width) is not one of the profile's widths \(widths)")
        }
        var byWidth: [Int: Double]? = nil
        if let curveField = try field.optionalMember("byWidth") {
            var values: [Int: Double] = [:]
            for (key, value) in try curveField.objectMembers() {
                let delta = try value.double()
                guard delta.isFinite else { throw value.fail("must be a finite number") }
                values[try widthKey(key, value, widths: widths)] = delta
            }
            byWidth = values
        }
        let delta = try field.member("deltaNLL")
        guard try delta.double().isFinite else { throw delta.fail("must be a finite number") }
        return .init(
            width: width, deltaNLL: try delta.double(),
            tokens: try field.optionalMember("tokens").map { Int(try $0.integer()) },
            byWidth: byWidth.map { WidthMap($0) })
    }

    static func readExpert(_ field: JSONField, widths: [Int]) throws -> Profile.Expert {
        let indexField = try field.member("index")
        let index = Int(try indexField.integer())
        guard index >= 0 else { throw indexField.fail("must be ≥ 0, got \(index)") }
        let paramsField = try field.member("params")
        let params = try paramsField.integer()
        guard params > 0, params <= Profile.maximumExpertParameters else {
            throw paramsField.fail("must be 1 to \(Profile.maximumExpertParameters) (10^12), got \(params)")
        }
        let freq = try field.member("freq").nonNegative()
        let mass = try field.member("mass").nonNegative()

        let errorField = try field.member("error")
        let bytesField = try field.member("bytes")
        var error: [Int: Double] = [:]
        var bytes: [Int: Int64] = [:]
        for (key, value) in try errorField.objectMembers() {
            let width = try widthKey(key, value, widths: widths)
            error[width] = try value.nonNegative()
        }
        for (key, value) in try bytesField.objectMembers() {
            let width = try widthKey(key, value, widths: widths)
            let size = try value.integer()
            if width == Profile.removalWidth {
                guard size == 0 else { throw value.fail("must be 0 (width 0 removes the expert), got \(size)") }
            } else {
                guard size > 0, size <= Profile.maximumExpertBytes else {
                    throw value.fail("must be 1 to \(Profile.maximumExpertBytes) (10^13), got \(size)")
                }
            }
            bytes[width] = size
        }
        for width in widths {
            guard error[width] != nil else {
                throw ModelFormatError(
                    file: field.file, "\(errorField.child(String(width))): missing (the profile lists width \(width))")
            }
            guard bytes[width] != nil else {
                throw ModelFormatError(
                    file: field.file, "\(bytesField.child(String(width))): missing (the profile lists width \(width))")
            }
        }
        var outputError: [Int: Double]? = nil
        if let outputField = try field.optionalMember("outputError") {
            var values: [Int: Double] = [:]
            for (key, value) in try outputField.objectMembers() {
                values[try widthKey(key, value, widths: widths)] = try value.nonNegative()
            }
            for width in widths where values[width] == nil {
                throw ModelFormatError(
                    file: field.file, "\(outputField.child(String(width))): missing (the profile lists width \(width))")
            }
            outputError = values
        }
        return Profile.Expert(
            index: index, params: params, freq: freq, mass: mass, error: WidthMap(error), bytes: WidthMap(bytes),
            outputError: outputError.map { WidthMap($0) })
    }

    static func widthKey(_ key: String, _ field: JSONField, widths: [Int]) throws -> Int {
        guard let width = Int(key) else { throw field.fail("key is not a bit width") }
        guard widths.contains(width) else {
            throw ModelFormatError(
                file: field.file, "width \(width): at \(field.path) is not in the profile's widths \(widths)")
        }
        return width
    }
}
