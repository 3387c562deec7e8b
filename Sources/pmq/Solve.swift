import ArgumentParser
import ModelFormat
import PMQSolver

extension PMQ {
    struct Solve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Allocate one bit width per expert under a size budget (integer program, CBC).",
            discussion: """
                Minimises the predicted loss increase Σ λ_l(b) · D_e(b) over one width per expert: D_e(b) is \
                the squared error expert e adds to its layer's output at width b (routing-weighted, measured by \
                pmq profile), λ_l(b) its layer's measured loss at b per unit of that error. --importance measured \
                is MC-MoE's Σ s_e · err(e,b)^α with s_e = freq^α · mass^β normalised within each layer. \
                --bits bounds the nominal average (Σ params·bits ≤ B·Σ params); --size bounds the real packed \
                bytes, scales and zeros included.
                """
        )

        @OptionGroup var allocation: AllocationOptions

        @Option(help: ArgumentHelp("Average bits per expert parameter, e.g. 2.5.", valueName: "B"))
        var bits: String?

        @Option(help: ArgumentHelp("Packed size of the experts, e.g. 11.2GB, 900MiB or bytes.", valueName: "size"))
        var size: String?

        @Option(help: ArgumentHelp("Write the allocation report (JSON) here.", valueName: "file"))
        var out: String?

        func validate() throws {
            guard (bits == nil) != (size == nil) else { throw ValidationError("give exactly one of --bits and --size") }
        }

        func run() throws {
            let budget = try bits.map(Budget.parseBits) ?? Budget.parseSize(size!)
            let profile = try allocation.loadProfile()
            let model = allocation.costModel
            let problem = try model.makeProblem(profile, budget: budget, file: allocation.profile)
            let options = allocation.solveOptions
            let result = try Allocator.solve(problem, options: options)
            let report = AllocationReport(
                profile: profile, profilePath: allocation.profile, problem: problem,
                allocation: result, budget: budget, model: model, options: options)
            if let out { try AtomicFile.writeJSON(report, to: out) }
            print(
                "\(profile.model.name): \(profile.expertCount) experts in \(profile.layers.count) layers, budget "
                    + "\(budget), scope \(model.scope.rawValue)"
            )
            print(report.summary())
            if let out { print("report: \(out)") }
        }
    }
}
