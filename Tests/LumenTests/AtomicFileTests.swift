import CLumenFiles
import Foundation
import Lumen
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Writing never goes through a planted link, never leaves a temporary, and text that is not
/// Latin-1 survives in the PNG (issue #21, items 7, 8 and 12).
final class AtomicFileTests: TemporaryDirectoryTestCase {
    private func image() throws -> RGBImage {
        try RGBImage(width: 4, height: 2, pixels: (0..<24).map { UInt8($0 * 10) })
    }

    private func plantLinks(_ names: [String], to victim: String) throws {
        for name in names { try FileManager.default.createSymbolicLink(atPath: dir + "/" + name, withDestinationPath: victim) }
    }

    private func assertRegularFile(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, file: file, line: line)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG, "\(path) is not a regular file", file: file, line: line)
    }

    func testWritersNeverFollowPlantedLinks() throws {
        let victim = dir + "/victim.txt"
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        let pid = getpid()
        // The names the PNG and safetensors writers used to open with O_CREAT | O_TRUNC, and the
        // targets themselves.
        try plantLinks([".a.png.\(pid).tmp", "a.png", "w.safetensors.tmp-\(pid)", "w.safetensors", ".d.json.\(pid).tmp", "d.json"], to: victim)
        try image().writePNG(to: dir + "/a.png", text: [("parameters", "x")])
        try SafetensorsWriter.write([("t", try Tensor(zeros: [2], dtype: .f32))], to: dir + "/w.safetensors")
        try AtomicFile.write(Data("{}".utf8), to: dir + "/d.json")
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious")
        for name in ["a.png", "w.safetensors", "d.json"] { try assertRegularFile(dir + "/" + name) }
        XCTAssertEqual(try RGBImage.readPNG(dir + "/a.png").image, try image())
        XCTAssertEqual(try SafetensorsFile(path: dir + "/w.safetensors").names, ["t"])
        // Nothing else was created: no temporary left, the planted links untouched.
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") && !$0.contains("\(pid)") }
        XCTAssertEqual(left, [])
    }

    func testTemporariesAreExclusiveAndModeFollowsUmask() throws {
        let old = umask(0o022)
        defer { umask(old) }
        let target = dir + "/m.png"
        let a = try AtomicFile.createTemporary(for: target), b = try AtomicFile.createTemporary(for: target)
        XCTAssertNotEqual(a.path, b.path)
        XCTAssertTrue(a.path.hasPrefix(dir + "/.m.png.") && a.path.hasSuffix(".tmp"), a.path)
        var st = stat()
        XCTAssertEqual(fstat(a.fd, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o644)
        XCTAssertEqual(lumen_tmp_count(), 2)
        AtomicFile.discard(a)
        try AtomicFile.commit(b, to: target)
        XCTAssertEqual(lumen_tmp_count(), 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["m.png"])
        XCTAssertThrowsError(try AtomicFile.createTemporary(for: dir + "/nosuchdir/x.png")) { error in
            XCTAssertTrue("\(error)".contains("nosuchdir"), "\(error)")
        }
    }

    func testCheckWritable() throws {
        try FileManager.default.createDirectory(atPath: dir + "/x.png", withIntermediateDirectories: true)
        try AtomicFile.checkWritable(dir + "/ok.png")
        for bad in [dir + "/nosuchdir/a.png", dir + "/x.png", dir + "/x.png/../nosuch/b.png"] {
            XCTAssertThrowsError(try AtomicFile.checkWritable(bad), bad) { error in
                guard case FileError.cannotWrite(let path, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(path, bad)
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["x.png"], "the probe left nothing")
    }

    /// The registry the signal handlers walk: registered paths are unlinked, unregistered ones
    /// are not, and a full registry refuses politely.
    func testTemporaryRegistry() throws {
        let kept = dir + "/kept", removed = dir + "/removed"
        for p in [kept, removed] { _ = FileManager.default.createFile(atPath: p, contents: Data([1])) }
        let a = lumen_tmp_register(kept), b = lumen_tmp_register(removed)
        XCTAssertGreaterThanOrEqual(a, 0)
        XCTAssertGreaterThanOrEqual(b, 0)
        lumen_tmp_unregister(a)
        XCTAssertEqual(lumen_tmp_count(), 1)
        lumen_tmp_remove_all()
        XCTAssertEqual(lumen_tmp_count(), 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: kept))
        XCTAssertFalse(FileManager.default.fileExists(atPath: removed))
        XCTAssertEqual(lumen_tmp_register(String(repeating: "x", count: 5000)), -1, "a path too long is refused")
        let slots = (0..<Int(LUMEN_TMP_SLOTS)).map { lumen_tmp_register(dir + "/s\($0)") }
        XCTAssertFalse(slots.contains(-1))
        XCTAssertEqual(lumen_tmp_register(dir + "/one-too-many"), -1)
        slots.forEach { lumen_tmp_unregister($0) }
        XCTAssertEqual(lumen_tmp_count(), 0)
    }

    /// The handler itself, in a forked child (which calls only C between fork and death): the
    /// registered file is gone and the child died of SIGTERM, as if never caught.
    func testSignalHandlerRemovesTemporariesAndReraises() throws {
        let path = dir + "/in-flight.tmp"
        _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
        let cPath = strdup(path)!
        defer { free(cPath) }
        let child = fork()
        if child == 0 {
            _ = lumen_tmp_register(cPath)
            _ = lumen_tmp_install_signal_handlers()
            raise(SIGTERM)
            _exit(3)  // not reached: the re-raised signal ends the child
        }
        XCTAssertGreaterThan(child, 0)
        var status: Int32 = 0
        XCTAssertEqual(waitpid(child, &status, 0), child)
        XCTAssertEqual(status & 0x7f, SIGTERM, "the child should die of SIGTERM (wait status \(status))")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    /// Item 12: text outside Latin-1 goes in iTXt and round-trips exactly; Latin-1 stays tEXt.
    func testNonLatin1TextRoundTripsAsITXt() throws {
        let prompt = "富士山の夕焼け、桜 🌸🗻 — «ñ»\nNegative prompt: 低品質"
        let path = dir + "/t.png"
        try image().writePNG(to: path, text: [("parameters", prompt), ("comment", "café au lait")])
        let (read, _, text) = try RGBImage.readPNGWithText(path)
        XCTAssertEqual(read, try image())
        XCTAssertEqual(text.map(\.key), ["parameters", "comment"])
        XCTAssertEqual(text.map(\.value), [prompt, "café au lait"])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertNotNil(bytes.range(of: Data("iTXtparameters".utf8)))
        XCTAssertNotNil(bytes.range(of: Data("tEXtcomment\0caf\u{E9} au lait".unicodeScalars.map { UInt8($0.value) })))
    }

    func testNonRegularFilesAreRefused() throws {
        let fifo = dir + "/f.png"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        XCTAssertThrowsError(try RGBImage.readPNG(fifo)) { error in
            XCTAssertEqual(error as? ImageError, .unreadable(path: fifo, reason: "is a FIFO (named pipe), not a regular file"))
        }
        XCTAssertThrowsError(try RegularFile.read(dir)) { error in
            XCTAssertEqual(error as? FileError, .notRegularFile(path: dir, kind: "a folder"))
        }
        XCTAssertThrowsError(try RGBImage.readPNG("/dev/null")) { error in
            XCTAssertTrue("\(error)".contains("/dev/null: cannot read the image: is a character device"), "\(error)")
        }
    }
}
