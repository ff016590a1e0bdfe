# One image for every taskstream service; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY constraints.txt pyproject.toml README.md ./
# torch first and pinned (PyPI's Linux wheel is the CUDA build the GPU workers need).
RUN pip install -c constraints.txt torch==2.13.0
COPY . .
RUN pip install -c constraints.txt . && pip check
USER nobody
CMD ["taskstream", "api"]
