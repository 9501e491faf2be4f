# One image for all three processes (label party, adversary, feature party).
# CPU by default; for a GPU host: --build-arg TORCH_SPEC=torch==2.13.0 --build-arg PIP_EXTRA="--index-url <your CUDA wheel index>"
FROM python:3.11-slim
ARG TORCH_SPEC=torch==2.13.0
ARG PIP_EXTRA=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY splitleak ./splitleak
COPY party_label ./party_label
COPY party_feature ./party_feature
COPY adversary ./adversary
COPY protos ./protos
COPY configs ./configs
RUN pip install --no-cache-dir $PIP_EXTRA "$TORCH_SPEC" && pip install --no-cache-dir .
VOLUME ["/runs"]
