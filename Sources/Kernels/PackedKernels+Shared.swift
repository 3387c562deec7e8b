import Foundation
import ModelFormat

extension Kernels {
    /// `linear(x, tokens:, matrix:, bias:)` for several matrices over the same `x`: attention's
    /// query, key and value, experts' gates and ups. See `linears(_:tokens:matrices:biases:)` with
    /// one input per matrix.
    public static func linears(_ x: [Float], tokens: Int, matrices: [Matrix], biases: [[Float]?]? = nil)
        -> [[Float]]
    {
        linears([[Float]](repeating: x, count: matrices.count), tokens: tokens, matrices: matrices, biases: biases)
    }

    /// `linear(inputs[m], tokens:, matrix: matrices[m], bias: biases[m])` for every `m`. In a decode
    /// step (fewer than `Decode.maxTokens` tokens) of packed linears with int8 activations, every
    /// matrix's group ranges run in one parallel region and each distinct input is quantized once
    /// (`PackedKernel.runSharedDecode`): a [256, 1024] key projection alone is too small to pay
    /// for the second core, each call quantized `x` again, and the last part of every call left a
    /// core waiting. Anything else runs the linears one by one. Either way each result is
    /// `linear`'s, bit for bit (the same parts, summed in the same order).
    public static func linears(_ inputs: [[Float]], tokens: Int, matrices: [Matrix], biases: [[Float]?]? = nil)
        -> [[Float]]
    {
        let biases = biases ?? [[Float]?](repeating: nil, count: matrices.count)
        precondition(inputs.count == matrices.count && biases.count == matrices.count, "one input and bias a matrix")
        guard let linears = sharedDecodeLinears(matrices, tokens: tokens), linears.count > 1 else {
            return zip(zip(inputs, matrices), biases).map { linear($0.0, tokens: tokens, matrix: $0.1, bias: $1) }
        }
        for (m, linear) in linears.enumerated() {
            precondition(inputs[m].count == tokens * linear.inFeatures, "x is not [tokens, in]")
            precondition(biases[m] == nil || biases[m]!.count == linear.outFeatures)
        }
        // The distinct inputs (arrays sharing a buffer are one), copied into one buffer.
        var bases: [UnsafeRawPointer?] = [], owners: [Int] = [], slot: [Int] = [], starts: [Int] = [], total = 0
        for (m, x) in inputs.enumerated() {
            let base = x.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) }
            if let known = bases.firstIndex(where: { $0 == base && base != nil }) {
                slot.append(known)
            } else {
                slot.append(bases.count)
                bases.append(base)
                owners.append(m)
                starts.append(total)
                total += x.count
            }
        }
        let xs = UnsafeMutablePointer<Float>.allocate(capacity: max(1, total))
        defer { xs.deallocate() }
        for (k, m) in owners.enumerated() {
            inputs[m].withUnsafeBufferPointer {
                xs.advanced(by: starts[k]).update(from: $0.baseAddress!, count: $0.count)
            }
        }
        let sizes = linears.map { tokens * $0.outFeatures }
        let y = UnsafeMutablePointer<Float>.allocate(capacity: sizes.reduce(0, +))
        defer { y.deallocate() }
        y.initialize(repeating: 0, count: sizes.reduce(0, +))
        let x = slot.map { UnsafePointer(xs + starts[$0]) }
        withOperands(linears, x: x, tokens: tokens, y: y, naturalOrder: true, int8Activations: true) {
            PackedKernel.runSharedDecode($0)
        }
        var offset = 0
        return zip(linears, biases).map { linear, bias in
            var result = Array(UnsafeBufferPointer(start: y + offset, count: tokens * linear.outFeatures))
            offset += tokens * linear.outFeatures
            if let bias { addBias(&result, bias, tokens: tokens) }
            return result
        }
    }

    /// The packed linears of `matrices` when a decode step of all of them can share a region, else nil.
    static func sharedDecodeLinears(_ matrices: [Matrix], tokens: Int) -> [PackedLinear]? {
        guard tokens > 0, tokens < PackedKernel.Decode.maxTokens, int8Activations, !useReferenceKernels else {
            return nil
        }
        var linears: [PackedLinear] = []
        for matrix in matrices {
            guard case let .packed(weights) = matrix.storage, weights.contiguous == nil, weights.naturalOrder else {
                return nil
            }
            linears.append(weights.linear)
        }
        return linears
    }

    /// `y[t, o] += bias[o]` for every token of `y` (`[tokens, bias.count]`).
    static func addBias(_ y: inout [Float], _ bias: [Float], tokens: Int) {
        for t in 0..<tokens {
            for o in bias.indices { y[t * bias.count + o] += bias[o] }
        }
    }

    /// The operands of `linears[index...]` (appended to `collected`) over inputs `x`, their outputs
    /// packed one after the other from `y`, with every buffer pinned while `body` runs.
    static func withOperands(
        _ linears: [PackedLinear], x: [UnsafePointer<Float>], tokens: Int, y: UnsafeMutablePointer<Float>,
        naturalOrder: Bool, int8Activations: Bool, index: Int = 0, collected: [PackedOperands] = [],
        _ body: ([PackedOperands]) -> Void
    ) {
        guard index < linears.count else { return body(collected) }
        let packed = linears[index]
        packed.qweight.withUnsafeBufferPointer { qweight in
            packed.qzeros.withUnsafeBufferPointer { qzeros in
                packed.scales.withUnsafeBufferPointer { scales in
                    packed.gIdx.withUnsafeBufferPointer { gIdx in
                        var operands = PackedOperands(
                            packed: packed, x: x[index], tokens: tokens, qweight: qweight.baseAddress!,
                            qzeros: qzeros.baseAddress, scales: scales.baseAddress!, gIdx: gIdx.baseAddress!, y: y,
                            naturalOrder: naturalOrder)
                        operands.int8Activations = int8Activations
                        operands.vnni = CPUFeatures.useVNNI
                        withOperands(
                            linears, x: x, tokens: tokens, y: y + tokens * packed.outFeatures,
                            naturalOrder: naturalOrder, int8Activations: int8Activations, index: index + 1,
                            collected: collected + [operands], body)
                    }
                }
            }
        }
    }
}

extension PackedKernel {
    /// Decode matvecs of several packed linears: what `run` does for each, with all matrices' parts
    /// in one region and each distinct input quantized once per token (`Int8Decode.prepare` depends
    /// on `x`, the width, the group size and `vnni` alone). Each matrix is cut into the parts
    /// `splitGroups` would cut it into and its partial outputs are summed in the same order, so every
    /// output equals `run`'s. Operands the int8 decode kernel does not take, or with four tokens or
    /// more, go through `run`.
    static func runSharedDecode(_ all: [PackedOperands]) {
        let takes = { (operands: PackedOperands) in operands.tokens < Decode.maxTokens && Int8Decode.applies(operands) }
        let shared = all.filter(takes)
        for operands in all where !takes(operands) { run(operands) }
        guard let tokens = shared.first?.tokens else { return }
        precondition(shared.allSatisfy { $0.tokens == tokens }, "one token count for all")
        for t in 0..<tokens { runSharedDecodeToken(shared.map { $0.token(t) }) }
    }

    /// One token of `runSharedDecode`.
    static func runSharedDecodeToken(_ singles: [PackedOperands]) {
        // One prepared input per distinct (x, width, group size, inputs, kernel).
        var prepared: [Int8Decode.Prepared] = [], uses: [Int] = []
        for (m, operands) in singles.enumerated() {
            let same = singles[..<m].firstIndex {
                $0.x == operands.x && $0.bits == operands.bits && $0.groupSize == operands.groupSize
                    && $0.inFeatures == operands.inFeatures && $0.vnni == operands.vnni
            }
            if let same {
                uses.append(uses[same])
            } else {
                uses.append(prepared.count)
                prepared.append(Int8Decode.prepare(operands))
            }
        }
        defer { for p in prepared { p.deallocate() } }
        // Jobs: (matrix, part, parts); a matrix cut into several parts sums them from `partial`.
        let partCounts = singles.map(groupParts)
        var jobs: [(matrix: Int, part: Int, parts: Int)] = []
        var offsets: [Int] = [], partialCount = 0
        for (m, operands) in singles.enumerated() {
            let parts = partCounts[m]
            offsets.append(partialCount)
            if parts > 1 { partialCount += parts * operands.outFeatures }
            for c in 0..<parts { jobs.append((m, c, parts)) }
        }
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: max(1, partialCount))
        defer { partial.deallocate() }
        let context = (
            partial: UnsafeSendable(partial), jobs: jobs, offsets: offsets, singles: singles, prepared: prepared,
            uses: uses
        )
        Parallel.perform(iterations: jobs.count) { j in
            let job = context.jobs[j]
            var part = context.singles[job.matrix]
            if job.parts > 1 {
                part.y = context.partial.pointer + context.offsets[job.matrix] + job.part * part.outFeatures
                if part.vnni {
                    part.y.initialize(repeating: 0, count: part.outFeatures) // by the core that fills it
                } else {
                    // The flush of the part's first group (a part has one at least) stores every tile's
                    // outputs; the outputs past the last tile are zeroed for `addParts`.
                    part.overwrite = true
                    let tiled = part.outFeatures / Decode.tile * Decode.tile
                    (part.y + tiled).initialize(repeating: 0, count: part.outFeatures - tiled)
                }
            }
            Int8Decode.run(
                part, prepared: context.prepared[context.uses[job.matrix]],
                groups: groups(part: job.part, of: job.parts, part), tiles: 0..<(part.outFeatures / Decode.tile))
        }
        for (m, operands) in singles.enumerated() {
            let out = operands.outFeatures, parts = partCounts[m]
            if parts > 1 { addParts(operands.y, partial + offsets[m], parts: parts, count: out) }
            let tiled = out / Decode.tile * Decode.tile
            if tiled < out { Tile.run(operands, outputs: tiled..<out) }
        }
    }

    /// `y += part 0, then part 1, …` (`parts` arrays of `count` floats, `count` apart), one pass
    /// over `y`: the sums of `Kernels.addScaled` once per part, in that order.
    static func addParts(_ y: UnsafeMutablePointer<Float>, _ first: UnsafePointer<Float>, parts: Int, count: Int) {
        var i = 0
        while i + 8 <= count {
            var sum = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
            for c in 0..<parts { sum += UnsafeRawPointer(first + c * count + i).loadUnaligned(as: SIMD8<Float>.self) }
            UnsafeMutableRawPointer(y + i).storeBytes(of: sum, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            for c in 0..<parts { y[i] += first[c * count + i] }
            i += 1
        }
    }
}
