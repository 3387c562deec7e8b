import Foundation
import Testing

@testable import ModelFormat

@Suite struct HugePagesTests {
    /// The array holds what `fill` wrote, whether or not it was advised.
    @Test(arguments: [0, 1, 1000, (5 << 20) / 4 + 3])
    func arrayHoldsWhatFillWrote(count: Int) {
        let values: [UInt32] = HugePages.array(count: count) { buffer in
            for i in buffer.indices { buffer[i] = UInt32(truncatingIfNeeded: i &* 2_654_435_761) }
        }
        #expect(values.count == count)
        #expect(values.indices.allSatisfy { values[$0] == UInt32(truncatingIfNeeded: $0 &* 2_654_435_761) })
        #expect(HugePages.filled(UInt16(0), count: count) == [UInt16](repeating: 0, count: count))
    }

    /// Small buffers are left alone; a large one, at any alignment, gets advice the kernel accepts
    /// wherever transparent huge pages are not switched off (an unaligned range would be EINVAL).
    @Test func adviceIsAcceptedOnWholePages() throws {
        let small = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { small.deallocate() }
        #expect(!HugePages.advise(small))
        let large = UnsafeMutableRawBufferPointer.allocate(byteCount: 9 << 20, alignment: 64)
        defer { large.deallocate() }
        let unaligned = UnsafeMutableRawBufferPointer(rebasing: large[4160...])
        #if os(Linux)
        let mode = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        if mode.contains("[always]") || mode.contains("[madvise]") {
            #expect(HugePages.advise(unaligned))
        }
        #endif
    }
}
