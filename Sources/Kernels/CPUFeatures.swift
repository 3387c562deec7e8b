import Foundation

/// Which instruction sets the kernels may use, decided once per process at run time. The
/// binary is built for AVX2 + FMA (Haswell); kernels with an AVX-512 twin (module
/// `KernelsAVX512`, built for Skylake-AVX512) call it when the CPU has AVX-512 F, CD, BW, DQ and
/// VL and the operating system saves their registers, which on Linux is when `/proc/cpuinfo`
/// lists them. `PMQ_KERNELS=avx2` keeps every kernel on the AVX2 path (to compare the two).
public enum CPUFeatures {
    /// The AVX-512 kernels are in use.
    public static let avx512 = allowed(hasAVX512)

    /// The int8 dot-product kernels (module `KernelsVNNI`) are in use: AVX-512 as above plus VNNI
    /// (`vpdpbusd`) and VBMI (`vpmultishiftqb`), i.e. Ice Lake / Sapphire Rapids Xeons and Zen 4 or newer.
    public static let vnni = allowed(hasVNNI)

    /// `check` of this machine's `/proc/cpuinfo`, unless `PMQ_KERNELS=avx2` (x86-64 Linux only).
    static func allowed(_ check: (String) -> Bool) -> Bool {
        #if arch(x86_64) && os(Linux)
        if ProcessInfo.processInfo.environment["PMQ_KERNELS"]?.lowercased() == "avx2" { return false }
        return check((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
        #else
        return false
        #endif
    }

    /// Keeps the calling task's kernels on the AVX2 path (tests compare the two paths).
    /// Read by the caller when a kernel starts.
    @TaskLocal public static var forceAVX2 = false

    /// The AVX-512 kernels may be used by the calling task now.
    public static var useAVX512: Bool { avx512 && !forceAVX2 }

    /// The VNNI kernels may be used by the calling task now.
    public static var useVNNI: Bool { vnni && !forceAVX2 }

    /// The AVX-512 subsets the AVX-512 kernels are built for, as `/proc/cpuinfo` names them.
    static let avx512Flags = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]

    /// The CPU in `/proc/cpuinfo`'s text has every AVX-512 subset the AVX-512 kernels are built for.
    public static func hasAVX512(cpuinfo: String) -> Bool {
        let flags = flags(cpuinfo: cpuinfo)
        return avx512Flags.allSatisfy { flags.contains($0[...]) }
    }

    /// The CPU has the AVX-512 subsets above and VNNI and VBMI.
    public static func hasVNNI(cpuinfo: String) -> Bool {
        let flags = flags(cpuinfo: cpuinfo)
        return (avx512Flags + ["avx512_vnni", "avx512vbmi"]).allSatisfy { flags.contains($0[...]) }
    }

    /// The first `flags` line's words (none without one).
    static func flags(cpuinfo: String) -> Set<Substring> {
        guard let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }))
    }

    /// The instruction set the int8 decode kernels use, for reports.
    public static var int8Path: String { vnni ? "AVX-512 VNNI" : "AVX2" }

    /// The instruction set the SGEMM kernels use, for reports.
    public static var sgemmPath: String { avx512 ? "AVX-512" : "AVX2" }
}
