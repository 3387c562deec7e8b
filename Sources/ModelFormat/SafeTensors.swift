import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Element types a safetensors file may declare.
public enum TensorDType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    public var isFloatingPoint: Bool { [.f32, .f16, .bf16].contains(self) }
}

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: TensorDType
    public var shape: [Int]
    /// Byte range relative to the start of the data section.
    public var dataRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file, memory-mapped read-only. Layout (huggingface/safetensors):
/// u64 little-endian header length N, N bytes of UTF-8 JSON (`{name: {dtype, shape,
/// data_offsets: [begin, end)}, "__metadata__": {string: string}}`), then the data. The header is
/// validated in full before any tensor is touched: size cap, JSON, dtype names, shape × dtype
/// size = byte span, spans inside the data, no overlaps and no holes.
public final class SafeTensorsFile: @unchecked Sendable {
    /// The format's own cap on the header (100 MB).
    public static let maximumHeaderBytes = 100_000_000

    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    /// Tensor names in file order (by data offset).
    public let names: [String]

    private let base: UnsafeRawPointer?
    private let mappedLength: Int
    /// Offset of the data section: 8 + the header's length.
    public let dataStart: Int

    /// The whole file as mapped (header and data), valid while this file is alive.
    public var fileBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: mappedLength) }

    public init(path: String) throws {
        self.path = path
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw ModelFormatError(file: path, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw ModelFormatError(file: path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        let length = Int(status.st_size)
        guard length >= 8 else {
            throw ModelFormatError(file: path, "truncated: \(length) bytes, shorter than the 8-byte header length")
        }
        let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, descriptor, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw ModelFormatError(file: path, "cannot map: \(String(cString: strerror(errno)))")
        }
        let raw = UnsafeRawPointer(mapped)
        do {
            let parsed = try SafeTensorsHeader.parse(UnsafeRawBufferPointer(start: raw, count: length), file: path)
            self.tensors = parsed.tensors
            self.metadata = parsed.metadata
            self.names = parsed.names
            self.dataStart = parsed.dataStart
        } catch {
            munmap(mapped, length)
            throw error
        }
        self.base = raw
        self.mappedLength = length
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), mappedLength) }
    }

    public func info(_ name: String) throws -> TensorInfo {
        guard let info = tensors[name] else { throw ModelFormatError(file: path, "missing tensor \(name)") }
        return info
    }

    /// The tensor's raw bytes, valid while this file is alive.
    public func bytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try info(name)
        return UnsafeRawBufferPointer(start: base! + dataStart + info.dataRange.lowerBound, count: info.dataRange.count)
    }

    /// Tells the kernel the tensor's pages are not needed now (`MADV_DONTNEED`): they leave this
    /// process's resident memory and are read from the file again if touched.
    public func release(_ name: String) {
        guard let info = tensors[name], let base else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (dataStart + info.dataRange.lowerBound) / page * page
        let end = dataStart + info.dataRange.upperBound
        guard end > start else { return }
        madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }

    /// A floating-point tensor (F32, F16 or BF16) converted to Float32, checked against `shape`.
    public func floats(_ name: String, shape expected: [Int]? = nil) throws -> [Float] {
        let info = try info(name)
        if let expected, expected != info.shape {
            throw ModelFormatError(file: path, "tensor \(name) has shape \(info.shape), expected \(expected)")
        }
        guard info.dtype.isFloatingPoint else {
            throw ModelFormatError(file: path, "tensor \(name) is \(info.dtype.rawValue), expected F32, F16 or BF16")
        }
        let raw = try bytes(name)
        return HugePages.array(count: info.elementCount) { buffer in
            FloatConversion.toFloat32(raw, dtype: info.dtype, into: buffer)
        }
    }
}

/// Header parsing, separate from the mapping so it can be tested (and fuzzed) on plain bytes.
public enum SafeTensorsHeader {
    public struct Parsed: Sendable {
        public var tensors: [String: TensorInfo]
        public var metadata: [String: String]
        public var names: [String]
        /// Offset of the data section from the start of the file.
        public var dataStart: Int
    }

    public static func parse(_ file: UnsafeRawBufferPointer, file path: String) throws -> Parsed {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: path, problem) }
        guard file.count >= 8 else { throw fail("truncated: shorter than the 8-byte header length") }
        var headerLength: UInt64 = 0
        for index in 0..<8 { headerLength |= UInt64(file[index]) << (8 * UInt64(index)) }
        guard headerLength <= UInt64(SafeTensorsFile.maximumHeaderBytes) else {
            throw fail("header length \(headerLength) exceeds the 100,000,000-byte limit")
        }
        guard 8 + Int(headerLength) <= file.count else {
            throw fail("truncated: header of \(headerLength) bytes but only \(file.count - 8) follow")
        }
        let header = Data(file[8..<(8 + Int(headerLength))])
        guard header.first == UInt8(ascii: "{") else { throw fail("header does not start with '{'") }
        let json: Any
        do {
            try StrictJSON.validate(header, file: path)
        } catch let error as ModelFormatError {
            throw fail("header: \(error.problem)")
        }
        do {
            json = try JSONSerialization.jsonObject(with: header)
        } catch {
            throw fail("header is not valid JSON")
        }
        guard let object = json as? [String: Any] else { throw fail("header is not a JSON object") }
        let dataStart = 8 + Int(headerLength)
        let dataLength = file.count - dataStart

        var metadata: [String: String] = [:]
        var tensors: [String: TensorInfo] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let entries = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (key, entry) in entries {
                    guard let text = entry as? String else { throw fail("__metadata__.\(key) is not a string") }
                    metadata[key] = text
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw fail("tensor \(name): entry is not an object") }
            guard let dtypeName = entry["dtype"] as? String else { throw fail("tensor \(name): missing dtype") }
            guard let dtype = TensorDType(rawValue: dtypeName) else {
                throw fail("tensor \(name): unknown dtype \(dtypeName)")
            }
            guard let shapeValues = entry["shape"] as? [Any] else { throw fail("tensor \(name): missing shape") }
            var shape: [Int] = []
            var elements = 1
            for dimension in shapeValues {
                guard let size = exactInt(dimension), size >= 0 else {
                    throw fail("tensor \(name): shape \(shapeValues) is not a list of non-negative integers")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: size)
                guard !overflow else { throw fail("tensor \(name): shape \(shapeValues) overflows") }
                elements = product
                shape.append(size)
            }
            guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                let begin = exactInt(offsets[0]), let end = exactInt(offsets[1]), begin >= 0, begin <= end
            else {
                throw fail("tensor \(name): data_offsets must be [begin, end] with 0 ≤ begin ≤ end")
            }
            let (bytes, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, bytes == end - begin else {
                throw fail(
                    "tensor \(name): shape \(shape) × \(dtype.rawValue) is "
                        + "\(overflow ? "too large" : "\(bytes) bytes") but data_offsets span \(end - begin)"
                )
            }
            guard end <= dataLength else {
                throw fail(
                    "tensor \(name): data_offsets [\(begin), \(end)) run past the end of the data (\(dataLength) bytes)"
                )
            }
            tensors[name] = TensorInfo(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
        }
        // The data must be covered exactly: sorted spans, each starting where the last ended.
        let ordered = tensors.values.sorted {
            ($0.dataRange.lowerBound, $0.dataRange.upperBound, $0.name) < (
                $1.dataRange.lowerBound, $1.dataRange.upperBound, $1.name
            )
        }
        var position = 0
        for info in ordered {
            if info.dataRange.lowerBound < position {
                throw fail("tensor \(info.name): data_offsets overlap another tensor's")
            }
            if info.dataRange.lowerBound > position {
                throw fail(
                    "tensor \(info.name): a hole of \(info.dataRange.lowerBound - position) bytes precedes its data")
            }
            position = info.dataRange.upperBound
        }
        guard position == dataLength else {
            throw fail("\(dataLength - position) bytes of data after the last tensor belong to none")
        }
        return Parsed(tensors: tensors, metadata: metadata, names: ordered.map(\.name), dataStart: dataStart)
    }

    /// An integral JSON number as Int (rejects 1.5, strings and out-of-range values).
    static func exactInt(_ value: Any) -> Int? {
        guard !isJSONBoolean(value), let number = value as? NSNumber else { return nil }
        let type = String(cString: number.objCType)
        if type != "d" && type != "f" { return number.intValue } // integer literal, full range
        let double = number.doubleValue
        guard double.isFinite, double == double.rounded(), abs(double) < 9.0e15 else { return nil }
        return Int(double)
    }
}
