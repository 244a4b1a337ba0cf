#include "textflag.h"

// func bitmapsSIMD(m *Masks, p *byte, blocks int, cands, digits *uint64)
//
// Per 32 bytes: for window positions 0..2, the low and high nibbles of the bytes at
// p+k index 16-byte tables (VPSHUFB, the table broadcast to both lanes); the six results
// are ANDed, and a non-zero byte marks a candidate. Digits: (c - '0') <= 9 unsigned.
//
// Only VEX-encoded instructions: one legacy-SSE instruction (MOVQ r64, xmm) while the
// upper halves are dirty costs a state transition of about a microsecond per call here.
TEXT ·bitmapsSIMD(SB), NOSPLIT, $0-40
	MOVQ m+0(FP), AX
	MOVQ p+8(FP), SI
	MOVQ blocks+16(FP), CX
	MOVQ cands+24(FP), DI
	MOVQ digits+32(FP), DX

	VBROADCASTI128 0(AX), Y0  // lo0
	VBROADCASTI128 16(AX), Y1 // hi0
	VBROADCASTI128 32(AX), Y2 // lo1
	VBROADCASTI128 48(AX), Y3 // hi1
	VBROADCASTI128 64(AX), Y4 // lo2
	VBROADCASTI128 80(AX), Y5 // hi2

	MOVL         $0x0f0f0f0f, BX
	VMOVD        BX, X6
	VPBROADCASTD X6, Y6 // nibble mask
	MOVL         $0x30303030, BX
	VMOVD        BX, X7
	VPBROADCASTD X7, Y7 // '0'
	MOVL         $0x09090909, BX
	VMOVD        BX, X8
	VPBROADCASTD X8, Y8 // 9
	VPXOR        Y15, Y15, Y15

	TESTQ CX, CX
	JZ    done

loop:
	// Bytes 0..31 of the block.
	VMOVDQU (SI), Y9
	VPSRLW  $4, Y9, Y10
	VPAND   Y6, Y10, Y10
	VPAND   Y6, Y9, Y11
	VPSHUFB Y11, Y0, Y12
	VPSHUFB Y10, Y1, Y13
	VPAND   Y12, Y13, Y14
	VPSUBB  Y7, Y9, Y9  // c - '0'
	VPMINUB Y8, Y9, Y10
	VPCMPEQB Y10, Y9, Y9 // 0xff where digit
	VPMOVMSKB Y9, R9

	VMOVDQU 1(SI), Y9
	VPSRLW  $4, Y9, Y10
	VPAND   Y6, Y10, Y10
	VPAND   Y6, Y9, Y11
	VPSHUFB Y11, Y2, Y12
	VPSHUFB Y10, Y3, Y13
	VPAND   Y12, Y14, Y14
	VPAND   Y13, Y14, Y14

	VMOVDQU 2(SI), Y9
	VPSRLW  $4, Y9, Y10
	VPAND   Y6, Y10, Y10
	VPAND   Y6, Y9, Y11
	VPSHUFB Y11, Y4, Y12
	VPSHUFB Y10, Y5, Y13
	VPAND   Y12, Y14, Y14
	VPAND   Y13, Y14, Y14

	VPCMPEQB  Y15, Y14, Y14 // 0xff where no bucket
	VPMOVMSKB Y14, R8
	NOTL      R8

	// Bytes 32..63.
	VMOVDQU 32(SI), Y9
	VPSRLW  $4, Y9, Y10
	VPAND   Y6, Y10, Y10
	VPAND   Y6, Y9, Y11
	VPSHUFB Y11, Y0, Y12
	VPSHUFB Y10, Y1, Y13
	VPAND   Y12, Y13, Y14
	VPSUBB  Y7, Y9, Y9
	VPMINUB Y8, Y9, Y10
	VPCMPEQB Y10, Y9, Y9
	VPMOVMSKB Y9, R11

	VMOVDQU 33(SI), Y9
	VPSRLW  $4, Y9, Y10
	VPAND   Y6, Y10, Y10
	VPAND   Y6, Y9, Y11
	VPSHUFB Y11, Y2, Y12
	VPSHUFB Y10, Y3, Y13
	VPAND   Y12, Y14, Y14
	VPAND   Y13, Y14, Y14

	VMOVDQU 34(SI), Y9
	VPSRLW  $4, Y9, Y10
	VPAND   Y6, Y10, Y10
	VPAND   Y6, Y9, Y11
	VPSHUFB Y11, Y4, Y12
	VPSHUFB Y10, Y5, Y13
	VPAND   Y12, Y14, Y14
	VPAND   Y13, Y14, Y14

	VPCMPEQB  Y15, Y14, Y14
	VPMOVMSKB Y14, R10
	NOTL      R10

	SHLQ $32, R10
	ORQ  R10, R8
	MOVQ R8, (DI)
	SHLQ $32, R11
	ORQ  R11, R9
	MOVQ R9, (DX)

	ADDQ $64, SI
	ADDQ $8, DI
	ADDQ $8, DX
	DECQ CX
	JNZ  loop

done:
	VZEROUPPER
	RET
