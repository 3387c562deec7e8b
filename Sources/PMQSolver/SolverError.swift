import Foundation

/// Everything PMQSolver reports to a user. Each message is one line that names the file
/// (where there is one) and what is wrong with it.
public enum SolverError: Error, LocalizedError, Equatable {
    /// The profile file could not be read at all.
    case unreadable(file: String, reason: String)
    /// The profile is not valid JSON.
    case malformedJSON(file: String, reason: String)
    /// A field of the profile is missing, has the wrong type or an invalid value.
    case invalidField(file: String, field: String, reason: String)
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
        case let .unreadable(file, reason): return "\(file): cannot read: \(reason)"
        case let .malformedJSON(file, reason): return "\(file): not valid JSON: \(reason)"
        case let .invalidField(file, field, reason): return "\(file): \(field): \(reason)"
        case let .unknownWidth(file, width, reason): return "\(file): width \(width): \(reason)"
        case let .infeasibleBudget(message): return "budget cannot be met: \(message)"
        case let .badBudget(message): return "bad budget: \(message)"
        case let .badOption(message): return message
        case let .solverFailure(message): return "solver failed: \(message)"
        }
    }
}
