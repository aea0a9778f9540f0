FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY merchants ./merchants
COPY exchange ./exchange
COPY settlement ./settlement
COPY console ./console
COPY server ./server
COPY cli ./cli
COPY sdk ./sdk
COPY migrations ./migrations
RUN pip install --no-cache-dir .
RUN useradd --system --uid 1000 alliance
USER alliance
EXPOSE 8000
CMD ["alliance", "serve", "--host", "0.0.0.0", "--port", "8000"]
