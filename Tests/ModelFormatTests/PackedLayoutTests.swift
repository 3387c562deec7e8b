@testable import ModelFormat
import Testing

@Suite struct PackedLayoutTests {
    /// Counted by hand from the AutoGPTQ v1 tensor shapes for a Mixtral-8x7B expert at 2 bits,
    /// group 128: w1/w3 are 14336×4096 (32 groups), w2 is 4096×14336 (112 groups).
    @Test func mixtralExpertAtTwoBits() {
        let gate = PackedLayout(outFeatures: 14336, inFeatures: 4096, bits: 2, groupSize: 128)
        #expect(gate.groups == 32)
        #expect(gate.qweightBytes == 4096 * 2 / 32 * 14336 * 4) // int32 [256, 14336]
        #expect(gate.qzerosBytes == 32 * (14336 * 2 / 32) * 4) // int32 [32, 896]
        #expect(gate.scalesBytes == 32 * 14336 * 2) // fp16  [32, 14336]
        #expect(gate.gIdxBytes == 4096 * 4) // int32 [4096]
        let down = PackedLayout(outFeatures: 4096, inFeatures: 14336, bits: 2, groupSize: 128)
        #expect(down.groups == 112)
        #expect(
            PackedLayout.expertBytes(hidden: 4096, intermediate: 14336, bits: 2, groupSize: 128)
                == 2 * gate.totalBytes + down.totalBytes)
        #expect(PackedLayout.expertBytes(hidden: 4096, intermediate: 14336, bits: 2, groupSize: 128) == 47_226_880)
    }

    @Test func threeBitsStraddleWordsAndOneBitStoresNoZeros() {
        // 3 bits: 32 input rows pack into 3 int32 words per output column.
        let three = PackedLayout(outFeatures: 64, inFeatures: 128, bits: 3, groupSize: 128)
        #expect(three.qweightBytes == 12 * 64 * 4)
        #expect(three.qzerosBytes == 1 * 6 * 4)
        let one = PackedLayout(outFeatures: 64, inFeatures: 128, bits: 1, groupSize: 64)
        #expect(one.qweightBytes == 4 * 64 * 4)
        #expect(one.qzerosBytes == 0)
        #expect(one.scalesBytes == 2 * 64 * 2)
    }

    @Test func partialGroupsAndOddSizesRoundUp() {
        let layout = PackedLayout(outFeatures: 10, inFeatures: 130, bits: 4, groupSize: 128)
        #expect(layout.groups == 2)
        #expect(layout.qweightBytes == 17 * 10 * 4) // ⌈130·4/32⌉ = 17 words
        #expect(layout.qzerosBytes == 2 * 2 * 4) // ⌈10·4/32⌉ = 2 words per group
    }
}
