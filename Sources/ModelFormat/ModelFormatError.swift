import Foundation

/// A model file that cannot be used. Every message names the file and what is wrong with it.
public struct ModelFormatError: Error, LocalizedError, Equatable {
    public var file: String
    public var problem: String

    public init(file: String, _ problem: String) {
        self.file = file
        self.problem = problem
    }

    public var errorDescription: String? { "\(file): \(problem)" }
}
