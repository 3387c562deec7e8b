import Foundation
@testable import ModelFormat
@testable import ExpertProfiler
import Testing

@Suite struct SyntheticProfileTests {
    @Test func isSeededAndShapedLikeTheModel() throws {
        let shape = SyntheticProfile.shapes["mixtral-8x7b"]!
        let a = SyntheticProfile(shape: shape, seed: 3).document()
        let b = SyntheticProfile(shape: shape, seed: 3).document()
        let c = SyntheticProfile(shape: shape, seed: 4).document()
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(try encoder.encode(a) == encoder.encode(b))
        #expect(try encoder.encode(a) != encoder.encode(c))
        #expect(a.layers.count == 32 && a.layers.allSatisfy { $0.experts.count == 8 })
        #expect(a.layers[0].experts[0].params == 176_160_768)
        #expect(a.model.name.contains("synthetic"))
        for expert in a.layers.flatMap(\.experts) {
            let errors = expert.error.entries.map(\.value)
            #expect(zip(errors, errors.dropFirst()).allSatisfy { $0 > $1 }, "error must fall with width")
            let bytes = expert.bytes.entries
            #expect(
                bytes.allSatisfy {
                    $0.value
                        == PackedLayout.expertBytes(hidden: 4096, intermediate: 14336, bits: $0.width, groupSize: 128)
                })
        }
    }
}
