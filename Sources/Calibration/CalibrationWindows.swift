import Foundation
import ModelFormat
import MoERuntime

/// The calibration windows every layer-by-layer pass starts from.
public enum CalibrationWindows {
    /// GPTQ's sequential pass: the windows go through decoder layers `0..<layers` (all by default)
    /// one at a time, each layer pinned while it runs. For an MoE layer, `observer(layer)` gives
    /// the observer that watches it run (`afterWindow(layer, window, observer)` after each window),
    /// then `finish(layer, observer)` runs; with `rerun`, the layer then runs again from its inputs
    /// with whatever `finish` installed (quantized experts, a pruner), so the next layer sees that
    /// output. A nil observer (a layer whose result is known, or one before those of interest) only
    /// runs the layer forward, and the last layer does not even that: nothing would read its output.
    public static func layerByLayer<Observer: RouterObserver>(
        model: MoEModel, session: ForwardPass, states: inout [[Float]], sequenceLength: Int, rerun: Bool,
        layers: Int? = nil, observer makeObserver: (Int) throws -> Observer?,
        afterWindow: (Int, Int, Observer) -> Void = { _, _, _ in }, finish: (Int, Observer) throws -> Void
    ) throws {
        let config = model.config
        let end = layers ?? config.layerCount
        for layer in 0..<end {
            let observer = config.moeLayers[layer] ? try makeObserver(layer) : nil
            guard let observer else {
                guard layer + 1 < end else { continue }
                try model.pin(layer: layer)
                defer { model.unpin(layer: layer) }
                forward(session, layer: layer, states: &states, sequenceLength: sequenceLength)
                continue
            }
            try model.pin(layer: layer)
            defer { model.unpin(layer: layer) }
            let inputs = rerun ? states : []
            session.observer = observer
            forward(session, layer: layer, states: &states, sequenceLength: sequenceLength) {
                afterWindow(layer, $0, observer)
            }
            session.observer = nil
            try finish(layer, observer)
            if rerun {
                states = inputs
                forward(session, layer: layer, states: &states, sequenceLength: sequenceLength)
            }
        }
    }

    /// Runs every window's hidden states through one decoder layer (each window its own sequence);
    /// `each(window)` after each.
    public static func forward(
        _ session: ForwardPass, layer: Int, states: inout [[Float]], sequenceLength: Int,
        each: (Int) -> Void = { _ in }
    ) {
        for window in states.indices {
            session.reset()
            session.forwardLayer(layer, &states[window], count: sequenceLength)
            each(window)
        }
    }

    public static func count(tokens: [Int], samples: Int, sequenceLength: Int) throws -> Int {
        let windows = min(samples, tokens.count / sequenceLength)
        guard windows >= 1 else {
            throw ModelFormatError(
                file: "calibration tokens",
                "\(tokens.count) tokens are fewer than one window of --seq-len \(sequenceLength)")
        }
        return windows
    }

    /// The windows' token embeddings, `[windows][sequenceLength · hidden]`.
    public static func embed(model: MoEModel, tokens: [Int], windows: Int, sequenceLength: Int) -> [[Float]] {
        let embeddings = model.matrix(.embeddings)
        return (0..<windows).map { window in
            tokens[(window * sequenceLength)..<((window + 1) * sequenceLength)].flatMap { embeddings.row($0) }
        }
    }
}
