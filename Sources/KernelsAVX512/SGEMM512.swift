#if arch(x86_64)
/// AVX-512 micro-kernels for `Kernels.SGEMM`. This module is compiled for Skylake-AVX512
/// (AVX-512 F/CD/BW/DQ/VL, 32 zmm registers); `Kernels.CPUFeatures` calls into it only when
/// the CPU and the kernel report those features. Nothing here may run on another CPU.
///
/// `rowBlock` is `SGEMM.rowBlock` with a 12 × 32 register tile (24 zmm accumulators; two of
/// SGEMM's 16-column B panels side by side) instead of 6 × 16: twice the FMA width of AVX2 and
/// more FMAs per load. Every element of C sees the same operations in the same order as in the
/// AVX2 kernel (a fused multiply-add per depth step from zero, then `C + α · acc` fused), so the
/// two paths give bit-identical results; the tests check that.
public enum SGEMM512 {
    /// Rows of the register tile; columns are two 16-wide panels.
    public static let mr = 12
    static let nr = 16

    /// `C[rows, 0..<columns] += α · A[rows, 0..<k] · B` with B packed as `SGEMM.PackedB`
    /// (`panelStride` floats per 16-column panel), over depth blocks of `kc` and column chunks of
    /// `ncPanels` panels. `A(i, p) = a[i·aRow + p·aColumn]`.
    public static func rowBlock(
        rows: Range<Int>, columns: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, aRow: Int, aColumn: Int,
        packed: UnsafePointer<Float>, panelStride: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, kc: Int, ncPanels: Int
    ) {
        let m = rows.count
        guard m > 0, columns > 0, k > 0 else { return }
        let rowPanels = (m + mr - 1) / mr
        let columnPanels = (columns + nr - 1) / nr
        let packedA = UnsafeMutablePointer<Float>.allocate(capacity: rowPanels * mr * min(k, kc))
        defer { packedA.deallocate() }
        var p0 = 0
        while p0 < k {
            let depth = min(kc, k - p0)
            packA(a, aRow: aRow, aColumn: aColumn, rows: rows, depth: p0..<(p0 + depth), into: packedA)
            var firstPanel = 0
            while firstPanel < columnPanels {
                let lastPanel = min(columnPanels, firstPanel + ncPanels)
                for rp in 0..<rowPanels {
                    let i0 = rp * mr
                    let height = min(mr, m - i0)
                    let aPanel = packedA + rp * mr * depth, cRow = c + (rows.lowerBound + i0) * ldc
                    var panel = firstPanel
                    while panel < lastPanel {
                        let j0 = panel * nr
                        let b0 = packed + panel * panelStride + p0 * nr
                        if panel + 1 < lastPanel {
                            kernel(
                                depth, aPanel, b0, b0 + panelStride, cRow + j0, ldc, alpha, height: height,
                                width: min(2 * nr, columns - j0))
                            panel += 2
                        } else {
                            // The odd last panel: the second half reads the first again and is not stored.
                            kernel(
                                depth, aPanel, b0, b0, cRow + j0, ldc, alpha, height: height,
                                width: min(nr, columns - j0))
                            panel += 1
                        }
                    }
                }
                firstPanel = lastPanel
            }
            p0 += depth
        }
    }

    /// `out[panel][p][r] = A(rows.lower + panel·mr + r, p)`, zero beyond the rows.
    @inline(__always)
    static func packA(
        _ a: UnsafePointer<Float>, aRow: Int, aColumn: Int, rows: Range<Int>, depth: Range<Int>,
        into out: UnsafeMutablePointer<Float>
    ) {
        let m = rows.count, k = depth.count
        let panels = (m + mr - 1) / mr
        for panel in 0..<panels {
            let dst = out + panel * mr * k
            for r in 0..<mr {
                let i = panel * mr + r
                if i < m {
                    let src = a + (rows.lowerBound + i) * aRow + depth.lowerBound * aColumn
                    if aColumn == 1 {
                        for p in 0..<k { dst[p * mr + r] = src[p] }
                    } else {
                        for p in 0..<k { dst[p * mr + r] = src[p * aColumn] }
                    }
                } else {
                    for p in 0..<k { dst[p * mr + r] = 0 }
                }
            }
        }
    }

    /// A `12 × 32` tile of C += α · (packed A panel) · (two packed B panels) over `k`;
    /// `height`/`width` below the tile only at the edges of C.
    @inline(__always)
    static func kernel(
        _ k: Int, _ a: UnsafePointer<Float>, _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>,
        _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, height: Int, width: Int
    ) {
        typealias V = SIMD16<Float>
        var l0 = V(), l1 = V(), l2 = V(), l3 = V(), l4 = V(), l5 = V()
        var l6 = V(), l7 = V(), l8 = V(), l9 = V(), l10 = V(), l11 = V()
        var r0 = V(), r1 = V(), r2 = V(), r3 = V(), r4 = V(), r5 = V()
        var r6 = V(), r7 = V(), r8 = V(), r9 = V(), r10 = V(), r11 = V()
        var ap = a, bp0 = b0, bp1 = b1
        for _ in 0..<k {
            let x = UnsafeRawPointer(bp0).loadUnaligned(as: V.self)
            let y = UnsafeRawPointer(bp1).loadUnaligned(as: V.self)
            var s = V(repeating: ap[0])
            l0.addProduct(s, x); r0.addProduct(s, y)
            s = V(repeating: ap[1]); l1.addProduct(s, x); r1.addProduct(s, y)
            s = V(repeating: ap[2]); l2.addProduct(s, x); r2.addProduct(s, y)
            s = V(repeating: ap[3]); l3.addProduct(s, x); r3.addProduct(s, y)
            s = V(repeating: ap[4]); l4.addProduct(s, x); r4.addProduct(s, y)
            s = V(repeating: ap[5]); l5.addProduct(s, x); r5.addProduct(s, y)
            s = V(repeating: ap[6]); l6.addProduct(s, x); r6.addProduct(s, y)
            s = V(repeating: ap[7]); l7.addProduct(s, x); r7.addProduct(s, y)
            s = V(repeating: ap[8]); l8.addProduct(s, x); r8.addProduct(s, y)
            s = V(repeating: ap[9]); l9.addProduct(s, x); r9.addProduct(s, y)
            s = V(repeating: ap[10]); l10.addProduct(s, x); r10.addProduct(s, y)
            s = V(repeating: ap[11]); l11.addProduct(s, x); r11.addProduct(s, y)
            ap += mr
            bp0 += nr
            bp1 += nr
        }
        let scale = V(repeating: alpha)
        if height == mr && width == 2 * nr {
            @inline(__always) func update(_ row: Int, _ left: V, _ right: V) {
                let pointer = UnsafeMutableRawPointer(c + row * ldc)
                pointer.storeBytes(of: pointer.loadUnaligned(as: V.self).addingProduct(scale, left), as: V.self)
                let second = pointer + 16 * MemoryLayout<Float>.stride
                second.storeBytes(of: second.loadUnaligned(as: V.self).addingProduct(scale, right), as: V.self)
            }
            update(0, l0, r0); update(1, l1, r1); update(2, l2, r2); update(3, l3, r3)
            update(4, l4, r4); update(5, l5, r5); update(6, l6, r6); update(7, l7, r7)
            update(8, l8, r8); update(9, l9, r9); update(10, l10, r10); update(11, l11, r11)
        } else {
            withUnsafeTemporaryAllocation(of: V.self, capacity: 2 * mr) { tile in
                tile[0] = l0; tile[1] = l1; tile[2] = l2; tile[3] = l3; tile[4] = l4; tile[5] = l5
                tile[6] = l6; tile[7] = l7; tile[8] = l8; tile[9] = l9; tile[10] = l10; tile[11] = l11
                tile[12] = r0; tile[13] = r1; tile[14] = r2; tile[15] = r3; tile[16] = r4; tile[17] = r5
                tile[18] = r6; tile[19] = r7; tile[20] = r8; tile[21] = r9; tile[22] = r10; tile[23] = r11
                for r in 0..<height {
                    let row = c + r * ldc
                    for j in 0..<width {
                        let value = j < nr ? tile[r][j] : tile[mr + r][j - nr]
                        row[j] = row[j].addingProduct(alpha, value)
                    }
                }
            }
        }
    }

    /// Register-resident FMA chains on zmm registers (the AVX-512 FMA peak, for benchmarks).
    @inline(never)
    public static func fmaChains(_ iterations: Int, seed: Float) -> Float {
        typealias V = SIMD16<Float>
        var x0 = V(repeating: seed), x1 = V(repeating: 1.1), x2 = V(repeating: 1.2), x3 = V(repeating: 1.3)
        var x4 = V(repeating: 1.4), x5 = V(repeating: 1.5), x6 = V(repeating: 1.6), x7 = V(repeating: 1.7)
        var x8 = V(repeating: 1.8), x9 = V(repeating: 1.9), x10 = V(repeating: 2.0), x11 = V(repeating: 2.1)
        let m = V(repeating: 0.999_999), d = V(repeating: 1e-7)
        for _ in 0..<iterations {
            x0 = d.addingProduct(x0, m); x1 = d.addingProduct(x1, m); x2 = d.addingProduct(x2, m)
            x3 = d.addingProduct(x3, m); x4 = d.addingProduct(x4, m); x5 = d.addingProduct(x5, m)
            x6 = d.addingProduct(x6, m); x7 = d.addingProduct(x7, m); x8 = d.addingProduct(x8, m)
            x9 = d.addingProduct(x9, m); x10 = d.addingProduct(x10, m); x11 = d.addingProduct(x11, m)
        }
        return (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11).sum()
    }
}
#endif
