#!/bin/sh
# Writes the Thrift compiler's Rust code for thrift/lbsim.thrift to target/thrift-gen/lbsim.rs,
# to compare with src/live/proto.rs after a change to the IDL.
#
# src/live/proto.rs is written by hand from the IDL (one `thrift_struct!` a struct, one
# generic codec; the compiler repeats the same code for every struct and method). Its unit
# test `the_bytes_are_those_of_the_generated_code` pins every message's bytes, in the binary
# and compact protocols, to those the compiler's code (0.17, `apt-get install
# thrift-compiler`) wrote; after an IDL change, run the compiler's code on the new messages
# and update the test's transcripts with the bytes it writes.
set -eu
cd "$(dirname "$0")/.."
mkdir -p target/thrift-gen
thrift -out target/thrift-gen --gen rs thrift/lbsim.thrift
echo "wrote target/thrift-gen/lbsim.rs"
