# Device-artifact builder: `docker run ... <image> build --all-targets` writes dist/ and its manifests.
# Same install as the README (pip install -c requirements.lock -e .), same `pipeline` commands.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    PIPELINE_FSDD_DIR=/data/fsdd \
    MPLCONFIGDIR=/tmp/matplotlib

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin pipeline

WORKDIR /opt/pipeline
COPY requirements.lock pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY models ./models
COPY targets ./targets
COPY calibration ./calibration
COPY examples ./examples
# gcc builds ttspico (SVOX Pico, a speech synthesizer shipped as source) and leaves again; flite is the optional
# third synthesis engine (`synth_engines = [..., "flite"]`)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev flite \
    && pip install --no-cache-dir -c requirements.lock -e . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && pipeline --help > /dev/null \
    && mkdir -p /data /work \
    && chown 10001:10001 /work

# /data: datasets (FSDD at /data/fsdd; without it the build synthesizes speech);
# /work: dist/ (artifacts + manifests), bench/ reports and the .pipeline stage cache
VOLUME ["/data", "/work"]
WORKDIR /work
USER 10001:10001

ENTRYPOINT ["pipeline"]
CMD ["build", "--all-targets"]
