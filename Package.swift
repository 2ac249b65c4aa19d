// swift-tools-version:6.1
//
// BankLink — a bank–enterprise direct-connect gateway.
//
// Module graph (one direction of dependency, pure at the bottom; arrows point at dependants):
//
//   BankLinkRules (the rule language; depends on nothing) ───────────┐
//   BankLinkFormats (bank files: camt, pain, MT940; depends on nothing) ─> banklink
//   BankLinkCore ─────┬─> BankLinkStore (+ CLMDB, CBankLinkThreads) ─┤
//                     ├─> BankLinkBanks (connectors, simulator) ─────┤
//                     ├─> BankLinkPKI ─> BankLinkClient ─> BankLinkCommandLine ─> banklink (admin CLI),
//                     │                                                             banklink-load (load generator)
//   BankLinkProto ────┴──────────────────────────────────────────────┴─> BankLinkServer
//   BankLinkServer ─> BankLinkDaemon ─> banklinkd;  BankLinkRuntime ─> the three executables
//   BankLinkTestSupport: every library above, for the test targets only.
//
// BankLinkCore has no I/O. BankLinkProto is generated (scripts/generate-protos.sh) and committed.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
  name: "banklink",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "banklinkd", targets: ["banklinkd"]),
    .executable(name: "banklink", targets: ["banklink"]),
    .executable(name: "banklink-load", targets: ["banklink-load"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
    .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
    .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    // Micro-benchmarks (Benchmarks/, `make microbench`). The runtime interposer trait is left off:
    // its package is not mirrored here.
    .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
  ],
  targets: [
    // LMDB from Debian's liblmdb-dev.
    .systemLibrary(
      name: "CLMDB",
      pkgConfig: "lmdb",
      providers: [.apt(["liblmdb-dev"])]
    ),

    // Thread placement (pinning, names) for the store's writer thread: GNU pthread calls.
    .target(name: "CBankLinkThreads"),

    // Domain core: no I/O, time is passed in.
    .target(
      name: "BankLinkCore",
      swiftSettings: swiftSettings
    ),

    // LMDB environment, scoped transactions, typed errors.
    .target(
      name: "BankLinkStore",
      dependencies: ["CLMDB", "CBankLinkThreads", "BankLinkCore", .product(name: "Metrics", package: "swift-metrics")],
      swiftSettings: swiftSettings
    ),

    // The hash-chained audit journal: entries, their canonical encoding, verification.
    .target(
      name: "BankLinkJournal",
      dependencies: [
        "BankLinkCore", "BankLinkStore", "BankLinkPKI",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
      ],
      swiftSettings: swiftSettings
    ),

    // The risk rule language: a CEL subset (docs/rules.md) — parser, type checker, evaluator and
    // a linear-time regex engine for `matches`. Pure: no I/O.
    .target(
      name: "BankLinkRules",
      swiftSettings: swiftSettings
    ),

    // Bank file formats: ISO 20022 camt.052/053/054 and pain.002 read, pain.001 written, SWIFT
    // MT940/942 read. Pure: no I/O beyond the bytes or the file it is given; streaming.
    .target(
      name: "BankLinkFormats",
      dependencies: ["CLibXML2"],
      swiftSettings: swiftSettings
    ),

    // libxml2's SAX2 parser, over Debian's libxml2-dev.
    .systemLibrary(
      name: "CLibXML2",
      pkgConfig: "libxml-2.0",
      providers: [.apt(["libxml2-dev"])]
    ),

    // Bank connectors: the connector protocols, the embedded bank simulator and the
    // host-to-host file connector.
    .target(
      name: "BankLinkBanks",
      dependencies: ["BankLinkCore", "BankLinkStore", "BankLinkFormats", .product(name: "Crypto", package: "swift-crypto")],
      swiftSettings: swiftSettings
    ),

    // Generated protobuf messages and gRPC stubs for banklink.v1 and grpc.health.v1.
    .target(
      name: "BankLinkProto",
      dependencies: [
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
      ],
      exclude: ["README.md"],
      swiftSettings: [.swiftLanguageMode(.v6)]
    ),

    // X.509: identities from certificates and minting of a development PKI.
    .target(
      name: "BankLinkPKI",
      dependencies: [
        "BankLinkCore",
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "_CryptoExtras", package: "swift-crypto"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
      ],
      swiftSettings: swiftSettings
    ),

    // Mutual-TLS gRPC client shared by the CLI, the tests and the load generator.
    .target(
      name: "BankLinkClient",
      dependencies: [
        "BankLinkProto", "BankLinkCore",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
      ],
      swiftSettings: swiftSettings
    ),

    // Use cases, gRPC handlers, authorization, server assembly.
    .target(
      name: "BankLinkServer",
      dependencies: [
        "BankLinkCore", "BankLinkStore", "BankLinkJournal", "BankLinkProto", "BankLinkPKI", "BankLinkBanks", "BankLinkRules", "BankLinkFormats",
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
      ],
      swiftSettings: swiftSettings
    ),

    // Composition root as a library: configuration, service group, signals, systemd notify.
    .target(
      name: "BankLinkDaemon",
      dependencies: [
        "CBankLinkThreads", "BankLinkCore", "BankLinkStore", "BankLinkJournal", "BankLinkServer", "BankLinkPKI", "BankLinkBanks", "BankLinkFormats",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
      ],
      swiftSettings: swiftSettings
    ),

    // Process set-up shared by the two executables: event loops and the global executor.
    .target(
      name: "BankLinkRuntime",
      dependencies: [
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: swiftSettings
    ),

    .executableTarget(
      name: "banklinkd",
      dependencies: [
        "BankLinkDaemon", "BankLinkServer",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        "BankLinkRuntime",
      ],
      swiftSettings: swiftSettings
    ),

    // Connection flags and output helpers shared by the two command-line tools.
    .target(
      name: "BankLinkCommandLine",
      dependencies: [
        "BankLinkClient",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      swiftSettings: swiftSettings
    ),

    // The admin CLI.
    .executableTarget(
      name: "banklink",
      dependencies: [
        "BankLinkClient", "BankLinkCommandLine", "BankLinkProto", "BankLinkPKI", "BankLinkCore", "BankLinkStore",
        "BankLinkJournal", "BankLinkRuntime", "BankLinkFormats",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      swiftSettings: swiftSettings
    ),

    // The load generator of `make bench`: a raw HTTP/2 driver and the full grpc-swift client.
    .executableTarget(
      name: "banklink-load",
      dependencies: [
        "BankLinkClient", "BankLinkCommandLine", "BankLinkProto", "BankLinkPKI", "BankLinkRuntime",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      swiftSettings: swiftSettings
    ),

    // Shared by the test targets: minted PKI, temp directories, an in-process daemon on port 0.
    .target(
      name: "BankLinkTestSupport",
      dependencies: [
        "BankLinkCore", "BankLinkPKI", "BankLinkServer", "BankLinkDaemon", "BankLinkClient", "BankLinkBanks",
        "BankLinkStore", .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),

    .testTarget(
      name: "BankLinkCoreTests",
      dependencies: ["BankLinkCore"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "BankLinkRulesTests",
      dependencies: ["BankLinkRules"],
      exclude: ["Conformance", "Fuzz"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "BankLinkFormatsTests",
      dependencies: ["BankLinkFormats"],
      exclude: ["Samples"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "BankLinkBanksTests",
      dependencies: ["BankLinkBanks", "BankLinkTestSupport", "BankLinkCore", "BankLinkFormats"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "BankLinkStoreTests",
      dependencies: ["BankLinkStore", "BankLinkJournal", "BankLinkTestSupport"],
      swiftSettings: swiftSettings
    ),
    // The attack suite: the real server under hostile headers, streams and strings
    // (`make attack-test`; part of `make test`).
    .testTarget(
      name: "BankLinkAttackTests",
      dependencies: [
        "BankLinkServer", "BankLinkTestSupport", "BankLinkProto", "BankLinkClient", "BankLinkCore", "BankLinkPKI", "BankLinkBanks",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      swiftSettings: swiftSettings
    ),

    .testTarget(
      name: "BankLinkServerTests",
      dependencies: [
        "BankLinkServer", "BankLinkTestSupport", "BankLinkProto", "BankLinkClient", "BankLinkPKI", "BankLinkJournal", "BankLinkRules",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        "BankLinkBanks", "BankLinkStore", "BankLinkCore",
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "BankLinkDaemonTests",
      dependencies: [
        "CBankLinkThreads", "BankLinkDaemon", "BankLinkTestSupport", "BankLinkServer", "BankLinkPKI", "BankLinkCore", "BankLinkBanks", "BankLinkFormats",
        "BankLinkClient", "BankLinkProto", "BankLinkRuntime", "BankLinkJournal", "BankLinkStore",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: swiftSettings
    ),

    // Storage micro-benchmarks: run with `make microbench` (release build, not part of make test).
    .executableTarget(
      name: "StorageBenchmarks",
      dependencies: [
        "BankLinkCore", "BankLinkStore", "BankLinkServer", "BankLinkJournal", "BankLinkPKI",
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "X509", package: "swift-certificates"),
      ],
      path: "Benchmarks/StorageBenchmarks",
      swiftSettings: swiftSettings,
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    ),

    // A bare grpc-swift-2 no-op server over mutual TLS, the framework's own cost per call
    // (`make bench-grpc`).
    .executableTarget(
      name: "BareGRPCServer",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      path: "Benchmarks/BareGRPCServer",
      swiftSettings: swiftSettings
    ),

    // The same unary answer straight from swift-nio-http2 over mutual TLS, no gRPC Swift: what an
    // HTTP/2 handler of our own could at best cost per call (`make bench-grpc`).
    .executableTarget(
      name: "BareNIOHTTP2Server",
      dependencies: [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
      ],
      path: "Benchmarks/BareNIOHTTP2Server",
      swiftSettings: swiftSettings
    ),

    // Reconciliation at scale: 1,000,000 entries against 1,000,000 payments (`make bench-reconcile`).
    .executableTarget(
      name: "ReconcileBenchmark",
      dependencies: ["BankLinkCore", "BankLinkStore", "BankLinkServer"],
      path: "Benchmarks/ReconcileBenchmark",
      swiftSettings: swiftSettings
    ),

    // Risk rule micro-benchmarks: evaluating and compiling rule sets (`make microbench`).
    .executableTarget(
      name: "RulesBenchmarks",
      dependencies: [
        "BankLinkCore", "BankLinkRules", "BankLinkServer",
        .product(name: "Benchmark", package: "benchmark"),
      ],
      path: "Benchmarks/RulesBenchmarks",
      swiftSettings: swiftSettings,
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    ),
  ]
)
