/// A benchmark cannot run with the options it was given (the message says which and why).
public struct BenchmarkError: Error, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
}
