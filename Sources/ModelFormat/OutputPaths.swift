import Foundation

/// What every command does with its output path before any work: check that it can be written,
/// take a lock so that two runs never write one output together, and remove what dead runs left
/// beside it (docs/FORMATS.md, "Outputs").
public enum OutputPaths {
    /// An exclusive lock on `.NAME.lock` beside `path`, held until `release` (or the process's end:
    /// the kernel drops an `flock` with its process, so a killed run never blocks the next one).
    public final class Lock: @unchecked Sendable {
        /// The open lock file; -1 once released (so that it is closed exactly once).
        var descriptor: Int32
        let path: String
        init(descriptor: Int32, path: String) {
            self.descriptor = descriptor
            self.path = path
        }
        public func release() {
            guard descriptor >= 0 else { return }
            unlink(path)
            flock(descriptor, LOCK_UN)
            close(descriptor)
            descriptor = -1
        }
        deinit { if descriptor >= 0 { close(descriptor) } }
    }

    static func sibling(_ path: String, _ name: String) -> String {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        return url.deletingLastPathComponent().appendingPathComponent(name).path
    }

    static func baseName(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent }

    /// What a command does with its output before any work: `checkWritable`, `lock` (held until
    /// the returned lock is released), then `removeStaleTemporaries`.
    public static func claim(_ path: String, folder: Bool) throws -> Lock {
        try checkWritable(path, folder: folder)
        let lock = try lock(path)
        removeStaleTemporaries(beside: path)
        return lock
    }

    /// Refuses a concurrent run on the same output in one line.
    public static func lock(_ path: String) throws -> Lock {
        let lockPath = sibling(path, ".\(baseName(path)).lock")
        // A run that finishes unlinks the lock file before unlocking it: a lock taken on that
        // unlinked file would exclude nobody, so it is dropped and taken again on the new file.
        for _ in 0..<100 {
            let descriptor = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                throw FileWriteError(
                    file: path, reason: "cannot create its lock \(lockPath): \(String(cString: strerror(errno)))")
            }
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
                close(descriptor)
                throw FileWriteError(
                    file: path,
                    reason: "another pmq run is writing it (lock \(lockPath) is held); wait for that run to end")
            }
            var held = stat(), named = stat()
            if fstat(descriptor, &held) == 0, stat(lockPath, &named) == 0, held.st_ino == named.st_ino,
                held.st_dev == named.st_dev
            {
                return Lock(descriptor: descriptor, path: lockPath)
            }
            close(descriptor)
        }
        throw FileWriteError(file: path, reason: "its lock \(lockPath) keeps being replaced; is another run looping?")
    }

    /// The parent folder must exist; a file output must not be a folder, a folder output not a file.
    public static func checkWritable(_ path: String, folder: Bool) throws {
        let parent = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FileWriteError(file: path, reason: "its folder \(parent) does not exist")
        }
        guard access(parent, W_OK) == 0 else { throw FileWriteError(file: path, reason: "\(parent) is not writable") }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue != folder {
            throw FileWriteError(file: path, reason: folder ? "is a file, not a folder" : "is a folder, not a file")
        }
    }

    /// A new hidden folder beside `path` to build a folder output in (`.NAME.partial-PID-N`).
    public static func stagingFolder(for path: String) throws -> String {
        let staging = sibling(path, ".\(baseName(path)).partial-\(ownerTag)-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
        } catch {
            throw FileWriteError(
                file: path, reason: "cannot create \(staging): \((error as NSError).localizedDescription)")
        }
        return staging
    }

    /// Puts the finished `staging` folder in place of `path` (replacing a folder there) by renames:
    /// readers see the old folder or the new one, never a mix; what a kill leaves is a hidden
    /// `.NAME.partial-…` folder that the next run removes.
    public static func replace(_ path: String, with staging: String) throws {
        let target = URL(fileURLWithPath: path).standardizedFileURL.path
        var old: String?
        if FileManager.default.fileExists(atPath: target) {
            let moved = staging + "-old"
            guard rename(target, moved) == 0 else {
                throw FileWriteError(
                    file: path, reason: "cannot move the old folder aside: \(String(cString: strerror(errno)))")
            }
            old = moved
        }
        guard rename(staging, target) == 0 else {
            let reason = String(cString: strerror(errno))
            if let old { rename(old, target) }
            throw FileWriteError(file: path, reason: "cannot rename \(staging) into place: \(reason)")
        }
        if let old { try? FileManager.default.removeItem(atPath: old) }
    }

    /// Removes the temporaries that runs now dead left beside `path`: `.NAME.partial-PID-…` folders
    /// (packed models, sweeps) and `.NAME.PID.tmp` files (atomic writes). A live run's are kept.
    public static func removeStaleTemporaries(beside path: String) {
        let parent = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent().path
        removeStaleTemporaries(in: parent, named: baseName(path))
    }

    /// Removes every dead run's temporary in `folder` (of any name, or of `name` only). Temporaries
    /// of runs on other machines (a cluster's tasks sharing the folder) are left: their PIDs mean
    /// nothing here.
    public static func removeStaleTemporaries(in folder: String, named name: String? = nil) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for entry in entries {
            guard let owner = temporaryOwner(entry, named: name) else { continue }
            if let host = owner.host, host != Self.host { continue }
            guard owner.pid != getpid() else { continue }
            if kill(owner.pid, 0) != 0, errno == ESRCH {
                try? FileManager.default.removeItem(atPath: (folder as NSString).appendingPathComponent(entry))
            }
        }
    }

    /// This machine's short host name as temporaries' names carry it: letters, digits and `-` (any
    /// other character becomes `_`), at most 40 characters; empty when it cannot be read.
    static let host: String = {
        var buffer = [UInt8](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "" }
        let full = String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
        let name = full.split(separator: ".").first ?? ""
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-".unicodeScalars)
        return String(String.UnicodeScalarView(name.unicodeScalars.prefix(40).map { allowed.contains($0) ? $0 : "_" }))
    }()

    /// The owner part of this run's temporaries' names: `PID@HOST` (`PID` when the host name is
    /// unknown), so that runs on several machines writing one shared folder tell theirs apart.
    public static var ownerTag: String { host.isEmpty ? "\(getpid())" : "\(getpid())@\(host)" }

    /// Who wrote a temporary: its PID and, for names with `@HOST`, its machine.
    struct Owner: Equatable {
        var pid: Int32
        var host: String?
    }

    /// The owner in a temporary's name: `.NAME.partial-TAG-N[-old]` or `.NAME.TAG.tmp` (NAME being `name`
    /// when given), TAG being `PID` or `PID@HOST`; nil for any other entry.
    static func temporaryOwner(_ entry: String, named name: String?) -> Owner? {
        guard entry.hasPrefix(".") else { return nil }
        var tag: Substring?
        /// `TAG-N` or `TAG-N-old` (the folder `replace` moved aside) → `TAG`; a host may hold `-`, N does not.
        func partialTag(_ rest: Substring) -> Substring? {
            let body = rest.hasSuffix("-old") ? rest.dropLast("-old".count) : rest
            return body.lastIndex(of: "-").map { body[..<$0] }
        }
        if let name {
            if entry.hasPrefix(".\(name).partial-") {
                tag = partialTag(entry.dropFirst(".\(name).partial-".count))
            } else if entry.hasPrefix(".\(name)."), entry.hasSuffix(".tmp") {
                tag = entry.dropFirst(".\(name).".count).dropLast(".tmp".count)[...]
            }
        } else if let range = entry.range(of: ".partial-", options: .backwards) {
            tag = partialTag(entry[range.upperBound...])
        } else if entry.hasSuffix(".tmp") {
            tag = entry.dropLast(".tmp".count).split(separator: ".").last
        }
        guard let tag else { return nil }
        let parts = tag.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        guard let pid = Int32(parts[0]), pid > 0 else { return nil }
        if parts.count == 2 {
            guard !parts[1].isEmpty, !parts[1].contains(".") else { return nil }
            return Owner(pid: pid, host: String(parts[1]))
        }
        return Owner(pid: pid, host: nil)
    }
}
