import Foundation

/// This machine's physical memory in bytes (0 when unknown): what eager loads and the measured
/// sweep's stored distributions are checked against before they allocate.
public var physicalMemoryBytes: Int {
    max(0, Int(sysconf(Int32(_SC_PHYS_PAGES)))) * max(0, Int(sysconf(Int32(_SC_PAGESIZE))))
}
