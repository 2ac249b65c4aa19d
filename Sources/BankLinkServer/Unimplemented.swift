import GRPCCore

/// The error every method of the contract answers until its capability is built.
func unimplemented(_ method: MethodDescriptor) -> RPCError {
  RPCError(
    code: .unimplemented,
    message: "\(method) is part of the banklink.v1 contract but is not implemented in this version of banklinkd"
  )
}
