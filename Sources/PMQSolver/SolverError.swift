import Foundation

/// Everything PMQSolver reports to a user (the profile reader's errors are ModelFormatError). Each message is one line
/// that names the file
/// (where there is one) and what is wrong with it.
public enum SolverError: Error, LocalizedError, Equatable {
    /// A requested width is not in the profile (or not supported at all).
    case unknownWidth(file: String, width: Int, reason: String)
    /// The budget cannot be met even with every expert at its smallest width.
    case infeasibleBudget(String)
    /// A budget string such as `11.2GB` could not be parsed.
    case badBudget(String)
    /// A solver option is out of range.
    case badOption(String)
    /// CBC failed in a way that left no usable solution.
    case solverFailure(String)

    public var errorDescription: String? {
        switch self {
        case let .unknownWidth(file, width, reason): return "\(file): width \(width): \(reason)"
        case let .infeasibleBudget(message): return "budget cannot be met: \(message)"
        case let .badBudget(message): return "bad budget: \(message)"
        case let .badOption(message): return message
        case let .solverFailure(message): return "solver failed: \(message)"
        }
    }
}
