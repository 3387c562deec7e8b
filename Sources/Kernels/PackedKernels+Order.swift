import ModelFormat

extension Kernels {
    /// An act-order layer (`g_idx` permuted) rewritten once, at load, so that each group's inputs
    /// are contiguous: the codes of input `inputOrder[j]` move to input `j` (`qweight` repacked;
    /// zeros and scales, indexed by group, unchanged). Run it with
    /// `linear(x, tokens:, packed: reordered, inputOrder: inputOrder)`, which gathers `x` in that
    /// order and takes the decode kernel instead of the slower general path (exllama's
    /// "make_sequential"). Returns nil when the groups are not all of `groupSize` inputs (the last
    /// may be shorter), the only shape GPTQ's act-order produces.
    public static func groupContiguous(_ packed: PackedLinear) -> (reordered: PackedLinear, inputOrder: [Int32])? {
        let inputs = packed.inFeatures, out = packed.outFeatures, bits = packed.bits, groupSize = packed.groupSize
        guard packed.gIdx.count == inputs, packed.gIdx.allSatisfy({ $0 >= 0 && Int($0) < packed.groups }) else {
            return nil
        }
        // Stable sort of the inputs by group.
        var members = [[Int32]](repeating: [], count: packed.groups)
        for i in 0..<inputs { members[Int(packed.gIdx[i])].append(Int32(i)) }
        for g in 0..<packed.groups where members[g].count != min(groupSize, inputs - g * groupSize) { return nil }
        let order = members.flatMap { $0 }
        var qweight = HugePages.filled(UInt32(0), count: packed.wordRows * out)
        let mask = UInt32((1 << bits) - 1)
        packed.qweight.withUnsafeBufferPointer { source in
            qweight.withUnsafeMutableBufferPointer { target in
                for j in 0..<inputs {
                    let from = Int(order[j]) * bits, to = j * bits
                    let fromRow = source.baseAddress! + (from / 32) * out, fromShift = UInt32(from % 32)
                    let fromNext = from % 32 + bits > 32 ? fromRow + out : nil
                    let toRow = target.baseAddress! + (to / 32) * out, toShift = UInt32(to % 32)
                    let toNext = to % 32 + bits > 32 ? toRow + out : nil
                    for o in 0..<out {
                        var code = fromRow[o] >> fromShift
                        if let fromNext { code |= fromNext[o] << (32 - fromShift) }
                        code &= mask
                        toRow[o] |= code << toShift
                        if let toNext { toNext[o] |= code >> (32 - toShift) }
                    }
                }
            }
        }
        let reordered = PackedLinear(
            outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize, qweight: qweight,
            qzeros: packed.qzeros, scales: packed.scales,
            gIdx: (0..<inputs).map { Int32($0 / groupSize) })
        return (reordered, order)
    }

    /// `linear` of a layer reordered by `groupContiguous`: `x`'s inputs are gathered in
    /// `inputOrder` first (O(tokens · in)).
    public static func linear(
        _ x: [Float], tokens: Int, packed: PackedLinear, bias: [Float]? = nil, inputOrder: [Int32]
    ) -> [Float] {
        precondition(inputOrder.count == packed.inFeatures && x.count == tokens * packed.inFeatures)
        let inputs = packed.inFeatures
        var gathered = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { x in
            inputOrder.withUnsafeBufferPointer { order in
                gathered.withUnsafeMutableBufferPointer { gathered in
                    for t in 0..<tokens {
                        let row = x.baseAddress! + t * inputs, destination = gathered.baseAddress! + t * inputs
                        for j in 0..<inputs { destination[j] = row[Int(order[j])] }
                    }
                }
            }
        }
        return linear(gathered, tokens: tokens, packed: packed, bias: bias, naturalOrder: true)
    }
}
