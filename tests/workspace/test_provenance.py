"""The machine named beside every timing: the CPU's model and its vector unit."""

from mgral_workspace.provenance import cpu_model


def test_cpu_model_names_the_vector_unit_that_tells_machines_of_one_name_apart():
    def info(flags: str) -> str:
        return f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n"

    assert cpu_model(info("avx avx2 avx512f avx512_bf16")) == "AMD EPYC (AVX-512)"
    assert cpu_model(info("avx avx2 fma")) == "AMD EPYC (AVX2, no AVX-512)"
    assert cpu_model(info("avx")) == "AMD EPYC (no AVX2)"
    assert cpu_model("model name\t: Some ARM core\n") == "Some ARM core"  # no flags line: the name alone


def test_cpu_model_on_arm_reads_the_features_line(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    neoverse = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes sve sve2\nCPU part\t: 0xd40\n"
    assert cpu_model(neoverse) == "aarch64 part 0xd40 (SVE)"  # no 'model name': the machine and the core's part
    assert cpu_model(neoverse.replace(" sve sve2", "")) == "aarch64 part 0xd40 (NEON, no SVE)"
    assert cpu_model("Features\t: half thumb neon vfpv4\n") == "aarch64 (NEON, no SVE)"  # 32-bit Arm says neon
