import Foundation
import ModelFormat

#if arch(x86_64)
import KernelsAVX512
#endif

/// Single-precision GEMM, `C += α · A · B`, Goto style: B is packed into contiguous panels of
/// `nr` columns, each row block of A into panels of `mr` rows, and a `mr × nr` register-tiled
/// micro-kernel (12 of the 16 AVX2 ymm registers hold the accumulators) runs over them.
/// Rows of C are split into blocks of `mc` handed to `Parallel.perform`.
///
/// Every element of C sees the same operations in the same order whatever the thread count
/// (the blocking depends only on the shape), so results do not depend on it.
///
/// Operands are strided views: `A(i, p) = a[i·aRow + p·aColumn]`, `B(p, j) = b[p·bRow + j·bColumn]`,
/// so transposes cost nothing. `C` is row-major with leading dimension `ldc`.
///
/// This is the hot kernel of GPTQ (the lazy block update), of the blocked Cholesky and of
/// `GPTQ.outputError`; `referenceMultiply` is the plain triple loop it is tested against.
public enum SGEMM {
    /// Micro-tile: `mr` rows × `nr` columns of accumulators (6 × 2 ymm).
    public static let mr = 6, nr = 16
    /// Depth of one packed block, and rows of A per thread task.
    static let kc = 256, mc = 96
    /// Column panels per chunk: `kc × 16 × ncPanels` floats of B (256 KiB) stay in L2.
    static let ncPanels = 16

    /// A strided read-only matrix view.
    public struct Matrix: @unchecked Sendable {
        public var base: UnsafePointer<Float>
        public var rowStride: Int
        public var columnStride: Int
        public init(_ base: UnsafePointer<Float>, rowStride: Int, columnStride: Int = 1) {
            self.base = base
            self.rowStride = rowStride
            self.columnStride = columnStride
        }
        /// The transpose, as a view of the same memory.
        public var transposed: Matrix { Matrix(base, rowStride: columnStride, columnStride: rowStride) }
    }

    /// B packed into panels of `nr` columns: `data[panel · panelStride + p · nr + jj] = B(p, panel·nr + jj)`,
    /// zero beyond `n`.
    public struct PackedB: @unchecked Sendable {
        public var data: UnsafeMutablePointer<Float>
        public var k: Int, n: Int
        /// Floats from one panel to the next: `k · nr`, or more when rows are appended later.
        public var panelStride: Int
        public var panels: Int { (n + SGEMM.nr - 1) / SGEMM.nr }

        /// Room for `capacity` rows (default `k`), `k` of them in use.
        public static func allocate(k: Int, n: Int, capacity: Int? = nil) -> PackedB {
            let panels = (n + SGEMM.nr - 1) / SGEMM.nr, stride = (capacity ?? k) * SGEMM.nr
            return PackedB(data: .allocate(capacity: max(1, panels * stride)), k: k, n: n, panelStride: stride)
        }
        public func deallocate() { data.deallocate() }

        /// Packs `B(p, j)` for `p < k`, `j < n`, groups of panels over the cores (a copy, the same
        /// whatever the thread count).
        public func pack(_ b: Matrix, threaded: Bool = false) {
            let chunk = 16, chunks = (panels + chunk - 1) / chunk
            guard threaded, k * n >= Parallel.minimumWork else {
                pack(b, rows: 0..<k)
                return
            }
            Parallel.perform(iterations: chunks) { c in
                pack(b, rows: 0..<k, panels: (c * chunk)..<min(panels, (c + 1) * chunk))
            }
        }

        /// Packs rows `rows` of B (`B(p, j)` for `p` in `rows`) into their places.
        public func pack(_ b: Matrix, rows: Range<Int>) { pack(b, rows: rows, panels: 0..<panels) }

        func pack(_ b: Matrix, rows: Range<Int>, panels: Range<Int>) {
            for panel in panels {
                let j0 = panel * SGEMM.nr
                let width = min(SGEMM.nr, n - j0)
                let out = data + panel * panelStride
                if width == SGEMM.nr && b.columnStride == 1 {
                    for p in rows {
                        let row = b.base + p * b.rowStride + j0
                        (out + p * SGEMM.nr).initialize(from: row, count: SGEMM.nr)
                    }
                } else {
                    for jj in 0..<SGEMM.nr {
                        if jj < width {
                            let column = b.base + (j0 + jj) * b.columnStride
                            for p in rows { out[p * SGEMM.nr + jj] = column[p * b.rowStride] }
                        } else {
                            for p in rows { out[p * SGEMM.nr + jj] = 0 }
                        }
                    }
                }
            }
        }
    }

    // MARK: Public entry points

    /// `C[m × n] += α · A[m × k] · B[k × n]`, multi-threaded over row blocks of C.
    /// With `lowerOnly`, only the elements `C(i, j)` with `j ≤ i` are required (others may be
    /// written too, within the rounded-up micro-tiles of the diagonal, but never beyond column n).
    public static func multiply(
        m: Int, n: Int, k: Int, alpha: Float = 1, a: Matrix, b: Matrix,
        c: UnsafeMutablePointer<Float>, ldc: Int, lowerOnly: Bool = false, threaded: Bool = true
    ) {
        guard m > 0, n > 0, k > 0 else { return }
        let packed = PackedB.allocate(k: k, n: n)
        defer { packed.deallocate() }
        packed.pack(b, threaded: threaded)
        multiply(m: m, alpha: alpha, a: a, packed: packed, c: c, ldc: ldc, lowerOnly: lowerOnly, threaded: threaded)
    }

    /// `C += α · A · B` with B already packed.
    public static func multiply(
        m: Int, alpha: Float, a: Matrix, packed: PackedB, c: UnsafeMutablePointer<Float>, ldc: Int,
        lowerOnly: Bool = false, threaded: Bool = true
    ) {
        let k = packed.k, n = packed.n
        guard m > 0, n > 0, k > 0 else { return }
        let blocks = (m + mc - 1) / mc
        let output = UnsafeSendable(c)
        let avx512 = CPUFeatures.useAVX512
        let body: @Sendable (Int) -> Void = { index in
            // Largest (lower-triangle) blocks first so the last ones to finish are small.
            let block = lowerOnly ? blocks - 1 - index : index
            let r0 = block * mc, r1 = min(m, r0 + mc)
            let columns = lowerOnly ? min(n, r1) : n
            rowBlock(
                rows: r0..<r1, columns: columns, alpha: alpha, a: a, packed: packed, c: output.pointer, ldc: ldc,
                avx512: avx512)
        }
        if threaded && 2 * m * n * k >= 1 << 21 {
            Parallel.perform(iterations: blocks, body)
        } else {
            for index in 0..<blocks { body(index) }
        }
    }

    /// One row block of C (at most `mc` rows), all depth blocks, columns `0..<columns`; with `avx512`, by
    /// `SGEMM512.rowBlock` (same results, bit for bit).
    static func rowBlock(
        rows: Range<Int>, columns: Int, alpha: Float, a: Matrix, packed: PackedB,
        c: UnsafeMutablePointer<Float>, ldc: Int, avx512: Bool
    ) {
        let k = packed.k
        #if arch(x86_64)
        if avx512 {
            SGEMM512.rowBlock(
                rows: rows, columns: columns, k: k, alpha: alpha, a: a.base, aRow: a.rowStride, aColumn: a.columnStride,
                packed: packed.data, panelStride: packed.panelStride, c: c, ldc: ldc, kc: kc, ncPanels: ncPanels)
            return
        }
        #endif
        let m = rows.count
        let rowPanels = (m + mr - 1) / mr
        let columnPanels = (columns + nr - 1) / nr
        let packedA = UnsafeMutablePointer<Float>.allocate(capacity: rowPanels * mr * min(k, kc))
        defer { packedA.deallocate() }
        var p0 = 0
        while p0 < k {
            let depth = min(kc, k - p0)
            packA(a, rows: rows, depth: p0..<(p0 + depth), into: packedA)
            // Column chunks of `nc` (their B panels stay in L2); inside, each row panel walks
            // along its rows of C, which the hardware prefetcher streams.
            var firstPanel = 0
            while firstPanel < columnPanels {
                let lastPanel = min(columnPanels, firstPanel + ncPanels)
                for rp in 0..<rowPanels {
                    let i0 = rp * mr
                    let height = min(mr, m - i0)
                    let aPanel = packedA + rp * mr * depth, cRow = c + (rows.lowerBound + i0) * ldc
                    for panel in firstPanel..<lastPanel {
                        let j0 = panel * nr
                        kernel(
                            depth, aPanel, packed.data + panel * packed.panelStride + p0 * nr, cRow + j0, ldc, alpha,
                            height: height, width: min(nr, columns - j0))
                    }
                }
                firstPanel = lastPanel
            }
            p0 += depth
        }
    }

    /// `out[panel][p][r] = A(rows.lower + panel·mr + r, p)`, zero beyond the rows.
    @inline(__always)
    static func packA(_ a: Matrix, rows: Range<Int>, depth: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let m = rows.count, k = depth.count
        let panels = (m + mr - 1) / mr
        for panel in 0..<panels {
            let dst = out + panel * mr * k
            for r in 0..<mr {
                let i = panel * mr + r
                if i < m {
                    let src = a.base + (rows.lowerBound + i) * a.rowStride + depth.lowerBound * a.columnStride
                    if a.columnStride == 1 {
                        for p in 0..<k { dst[p * mr + r] = src[p] }
                    } else {
                        for p in 0..<k { dst[p * mr + r] = src[p * a.columnStride] }
                    }
                } else {
                    for p in 0..<k { dst[p * mr + r] = 0 }
                }
            }
        }
    }

    /// The micro-kernel: a `6 × 16` tile of C += α · (packed A panel) · (packed B panel) over
    /// `k`; `height`/`width` < the tile only at the edges of C.
    @inline(__always)
    static func kernel(
        _ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
        _ ldc: Int, _ alpha: Float, height: Int, width: Int
    ) {
        typealias V = SIMD16<Float>
        var c0 = V(), c1 = V(), c2 = V(), c3 = V(), c4 = V(), c5 = V()
        var ap = a, bp = b
        for _ in 0..<k {
            let bv = UnsafeRawPointer(bp).loadUnaligned(as: V.self)
            c0.addProduct(V(repeating: ap[0]), bv)
            c1.addProduct(V(repeating: ap[1]), bv)
            c2.addProduct(V(repeating: ap[2]), bv)
            c3.addProduct(V(repeating: ap[3]), bv)
            c4.addProduct(V(repeating: ap[4]), bv)
            c5.addProduct(V(repeating: ap[5]), bv)
            ap += mr
            bp += nr
        }
        let scale = V(repeating: alpha)
        if height == mr && width == nr {
            @inline(__always) func update(_ row: Int, _ acc: V) {
                let pointer = UnsafeMutableRawPointer(c + row * ldc)
                pointer.storeBytes(of: pointer.loadUnaligned(as: V.self).addingProduct(scale, acc), as: V.self)
            }
            update(0, c0); update(1, c1); update(2, c2); update(3, c3); update(4, c4); update(5, c5)
        } else {
            for r in 0..<height {
                let acc: V
                switch r {
                case 0: acc = c0
                case 1: acc = c1
                case 2: acc = c2
                case 3: acc = c3
                case 4: acc = c4
                default: acc = c5
                }
                let row = c + r * ldc
                for j in 0..<width { row[j] = row[j].addingProduct(alpha, acc[j]) }
            }
        }
    }

    /// Plain triple loop, `C += α · A · B` (Double accumulation): the test oracle.
    public static func referenceMultiply(
        m: Int, n: Int, k: Int, alpha: Float, a: Matrix, b: Matrix,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    sum +=
                        Double(a.base[i * a.rowStride + p * a.columnStride])
                        * Double(b.base[p * b.rowStride + j * b.columnStride])
                }
                c[i * ldc + j] += Float(Double(alpha) * sum)
            }
        }
    }

    // MARK: Measured peak

    /// FMA throughput of this machine on the kernels' path (AVX2 or AVX-512, `CPUFeatures`):
    /// `threads` threads each run independent register-resident SIMD FMA chains for about
    /// `duration` seconds; returns GFLOP/s (2 per lane per FMA).
    public static func measureFMAPeak(threads: Int, duration: Double = 0.3) -> Double {
        let iterations = 1 << 20
        #if arch(x86_64)
        let avx512 = CPUFeatures.useAVX512
        let chains: @Sendable (Int, Float) -> Float = {
            avx512 ? SGEMM512.fmaChains($0, seed: $1) : fmaChains($0, seed: $1)
        }
        let perIteration = avx512 ? 12 * 16 * 2 : 6 * 16 * 2
        #else
        let chains: @Sendable (Int, Float) -> Float = { fmaChains($0, seed: $1) }
        let perIteration = 6 * 16 * 2
        #endif
        // Calibrate the repetition count on one thread.
        let calibrate = ContinuousClock.now
        _ = chains(iterations, 0)
        let once = max(1e-6, seconds(since: calibrate))
        let repeats = max(1, Int(duration / once))
        let start = ContinuousClock.now
        let sink = Sink()
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var total: Float = 0
            for r in 0..<repeats { total += chains(iterations, Float(r)) }
            sink.add(total)
        }
        let time = seconds(since: start)
        // Chains × 16 lanes × 2 flops per iteration.
        return Double(threads * repeats * iterations * perIteration) / time / 1e9
    }

    @inline(never)
    static func fmaChains(_ iterations: Int, seed: Float) -> Float {
        typealias V = SIMD16<Float>
        // 6 chains × 2 ymm = 12 independent FMA chains (latency 4 × 2 pipes needs ≥ 8), plus
        // the two operands: all in the 16 ymm registers.
        var x0 = V(repeating: seed), x1 = V(repeating: 1.1), x2 = V(repeating: 1.2), x3 = V(repeating: 1.3),
            x4 = V(repeating: 1.4)
        var x5 = V(repeating: 1.5)
        let m = V(repeating: 0.999_999), d = V(repeating: 1e-7)
        for _ in 0..<iterations {
            x0 = d.addingProduct(x0, m); x1 = d.addingProduct(x1, m); x2 = d.addingProduct(x2, m)
            x3 = d.addingProduct(x3, m); x4 = d.addingProduct(x4, m); x5 = d.addingProduct(x5, m)
        }
        return (x0 + x1 + x2 + x3 + x4 + x5).sum()
    }

    final class Sink: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Float = 0
        func add(_ x: Float) { lock.lock(); value += x; lock.unlock() }
    }

}
