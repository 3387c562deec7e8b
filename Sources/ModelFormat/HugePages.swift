#if os(Linux)
import Glibc
#endif

/// Weight arrays on 2 MiB pages. A decode token streams every active weight once; on 4 KiB pages
/// that is one TLB miss and one restart of the hardware prefetcher per 4 KiB. Linux backs anonymous
/// memory with transparent huge pages where the process asks for them (`MADV_HUGEPAGE`; the
/// system default here is "madvise"), so large weight arrays are advised before their first write,
/// when the page faults still choose the page size. Advice only: where the kernel refuses it
/// (no THP, no free 2 MiB page), the array is the same array on small pages.
public enum HugePages {
    /// Arrays smaller than this stay as they are (two huge pages: at least one lies wholly inside).
    public static let threshold = 4 << 20

    static let pageSize = 2 << 20

    /// Advises the whole 2 MiB pages inside `buffer` (Linux; nothing elsewhere or when small).
    /// Returns whether the kernel took the advice.
    @discardableResult
    public static func advise(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        #if os(Linux)
        guard let base = buffer.baseAddress, buffer.count >= threshold else { return false }
        let address = UInt(bitPattern: base)
        let start = (address + UInt(pageSize) - 1) & ~UInt(pageSize - 1)
        let end = (address + UInt(buffer.count)) & ~UInt(pageSize - 1)
        guard end > start, let pointer = UnsafeMutableRawPointer(bitPattern: start) else { return false }
        return madvise(pointer, Int(end - start), MADV_HUGEPAGE) == 0
        #else
        return false
        #endif
    }

    /// `count` elements written by `fill`, into storage advised before the first write. `fill`
    /// must initialize every element.
    public static func array<T>(count: Int, fill: (UnsafeMutableBufferPointer<T>) throws -> Void) rethrows -> [T] {
        try [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            advise(UnsafeMutableRawBufferPointer(buffer))
            try fill(buffer)
            initialized = count
        }
    }

    /// `count` copies of `value` on advised storage.
    public static func filled<T>(_ value: T, count: Int) -> [T] {
        array(count: count) { $0.initialize(repeating: value) }
    }

    /// A copy of `values` on advised storage.
    public static func copy<T>(_ values: [T]) -> [T] {
        array(count: values.count) { _ = $0.initialize(fromContentsOf: values) }
    }
}
