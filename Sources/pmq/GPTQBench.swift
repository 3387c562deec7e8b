import ArgumentParser
import Foundation
import ModelFormat
import QuantEngine

extension PMQ {
    struct GPTQBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gptq",
            abstract: "Time GPTQ of one SwiGLU expert (gate, up, down) at several widths on random weights and Hessians."
        )

        @Option(help: "Hidden size (gate/up input, down output).")
        var hidden: Int = 1024

        @Option(help: "Expert width (gate/up output, down input).")
        var intermediate: Int = 3584

        @Option(help: ArgumentHelp("Widths.", valueName: "w,w,…"), transform: parseWidths)
        var widths: [Int] = [2, 3, 4]

        @Option(help: "Calibration rows used to build the Hessians.")
        var tokens: Int = 2048

        func run() throws {
            var state: UInt64 = 42
            func next() -> Float {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
            }
            func hessian(_ n: Int) -> [Double] {
                let x = (0..<(tokens * n)).map { _ in next() }
                var h = [Double](repeating: 0, count: n * n)
                for t in 0..<tokens {
                    for i in 0..<n {
                        let xi = Double(x[t * n + i])
                        for j in i..<n { h[i * n + j] += xi * Double(x[t * n + j]) }
                    }
                }
                for i in 0..<n { for j in 0..<i { h[i * n + j] = h[j * n + i] } }
                return h
            }
            let start = ContinuousClock.now
            let inputH = hessian(hidden), downH = hessian(intermediate)
            emit(String(format: "Hessians (%d rows): %.1f s", tokens, seconds(since: start)))
            let gateUp = (0..<(hidden * intermediate)).map { _ in next() * 0.02 }
            let down = (0..<(hidden * intermediate)).map { _ in next() * 0.02 }
            let gptq = GPTQ()
            for bits in widths {
                let t0 = ContinuousClock.now
                let e1 = try gptq.quantize(weight: gateUp, rows: intermediate, columns: hidden, hessian: inputH, bits: bits).error
                let t1 = seconds(since: t0)
                let t2start = ContinuousClock.now
                let e2 = try gptq.quantize(weight: down, rows: hidden, columns: intermediate, hessian: downH, bits: bits).error
                let t2 = seconds(since: t2start)
                emit(String(format: "%d bits: gate/up %d×%d %.2f s each, down %d×%d %.2f s, expert %.2f s (errors %.4g, %.4g)",
                            bits, intermediate, hidden, t1, hidden, intermediate, t2, 2 * t1 + t2, e1, e2))
            }
        }
    }
}
