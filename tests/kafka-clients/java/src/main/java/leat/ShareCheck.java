package leat;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Kafka's share consumer (KafkaShareConsumer, KIP-932) against Leat's
 * listener, with explicit acknowledgements. Every command takes the
 * listener's address and the token first, prints what the Rust test asserts
 * on, and exits non-zero with the reason when something fails.
 *
 * <pre>
 *   share  ADDR TOKEN TOPIC GROUP C N   C consumers accept N records together:
 *                                       "accepted N distinct D redelivered R",
 *                                       then one line per consumer: its count
 *   settle ADDR TOKEN TOPIC GROUP       of 3 records (values r0 r1 r2): releases
 *                                       r0 then accepts it redelivered, rejects
 *                                       r1, accepts r2, then sees nothing more
 *   die    ADDR TOKEN TOPIC GROUP       takes one poll's records and halts
 *                                       without acknowledging: "took N"
 * </pre>
 */
public final class ShareCheck {
    private ShareCheck() {}

    static KafkaShareConsumer<String, String> consumer(String addr, String token, String group, int maxRecords) {
        Properties p = KafkaCheck.common(addr, token);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, Integer.toString(maxRecords));
        p.put("share.acknowledgement.mode", "explicit");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaShareConsumer<>(p);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            KafkaCheck.fail("usage: share|settle|die ADDR TOKEN TOPIC GROUP ...");
        }
        String addr = args[1], token = args[2], topic = args[3], group = args[4];
        switch (args[0]) {
            case "share" -> share(addr, token, topic, group, Integer.parseInt(args[5]), Integer.parseInt(args[6]));
            case "settle" -> settle(addr, token, topic, group);
            case "die" -> die(addr, token, topic, group);
            default -> KafkaCheck.fail("unknown command " + args[0]);
        }
    }

    /** Fails on any acknowledgement error commitSync reports. */
    static void committed(Map<TopicIdPartition, Optional<KafkaException>> results) {
        for (var e : results.entrySet()) {
            if (e.getValue().isPresent()) {
                KafkaCheck.fail("acknowledging on " + e.getKey() + " failed: " + e.getValue().get());
            }
        }
    }

    static void share(String addr, String token, String topic, String group, int consumers, int n)
            throws Exception {
        Set<String> distinct = ConcurrentHashMap.newKeySet();
        AtomicInteger accepted = new AtomicInteger();
        AtomicInteger redelivered = new AtomicInteger();
        int[] counts = new int[consumers];
        List<Thread> threads = new ArrayList<>();
        List<Throwable> errors = new ArrayList<>();
        long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
        for (int i = 0; i < consumers; i++) {
            int me = i;
            Thread t = new Thread(() -> {
                try (KafkaShareConsumer<String, String> c = consumer(addr, token, group, 5)) {
                    c.subscribe(List.of(topic));
                    while (distinct.size() < n && System.nanoTime() < deadline) {
                        ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(200));
                        for (ConsumerRecord<String, String> r : records) {
                            c.acknowledge(r, AcknowledgeType.ACCEPT);
                            counts[me]++;
                            accepted.incrementAndGet();
                            distinct.add(r.value());
                            if (r.deliveryCount().orElse((short) 1) > 1) {
                                redelivered.incrementAndGet();
                            }
                            // Some work, so that the others get their turn.
                            Thread.sleep(2);
                        }
                        if (!records.isEmpty()) {
                            committed(c.commitSync());
                        }
                    }
                } catch (Throwable e) {
                    synchronized (errors) {
                        errors.add(e);
                    }
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) {
            t.join();
        }
        if (!errors.isEmpty()) {
            errors.get(0).printStackTrace();
            KafkaCheck.fail("a consumer failed: " + errors.get(0));
        }
        System.out.println("accepted " + accepted.get() + " distinct " + distinct.size()
            + " redelivered " + redelivered.get());
        for (int c : counts) {
            System.out.println(c);
        }
    }

    static void settle(String addr, String token, String topic, String group) {
        try (KafkaShareConsumer<String, String> c = consumer(addr, token, group, 10)) {
            c.subscribe(List.of(topic));
            boolean r0Done = false, r1Seen = false, r2Done = false;
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (!(r0Done && r1Seen && r2Done)) {
                if (System.nanoTime() > deadline) {
                    KafkaCheck.fail("timed out: r0 " + r0Done + " r1 " + r1Seen + " r2 " + r2Done);
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    short count = r.deliveryCount().orElse((short) -1);
                    System.out.println(r.value() + " " + r.offset() + " " + count);
                    switch (r.value()) {
                        case "r0" -> {
                            if (count == 1) {
                                c.acknowledge(r, AcknowledgeType.RELEASE);
                            } else {
                                c.acknowledge(r, AcknowledgeType.ACCEPT);
                                r0Done = true;
                            }
                        }
                        case "r1" -> {
                            if (r1Seen) {
                                KafkaCheck.fail("the rejected r1 came back");
                            }
                            c.acknowledge(r, AcknowledgeType.REJECT);
                            r1Seen = true;
                        }
                        default -> {
                            c.acknowledge(r, AcknowledgeType.ACCEPT);
                            r2Done = true;
                        }
                    }
                }
                committed(c.commitSync());
            }
            // Nothing comes back: r1 was rejected, the others accepted.
            long quiet = System.nanoTime() + Duration.ofSeconds(3).toNanos();
            while (System.nanoTime() < quiet) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    KafkaCheck.fail("got " + r.value() + " again (delivery " + r.deliveryCount() + ")");
                }
            }
            System.out.println("quiet");
        }
    }

    static void die(String addr, String token, String topic, String group) {
        KafkaShareConsumer<String, String> c = consumer(addr, token, group, 50);
        c.subscribe(List.of(topic));
        long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
        while (System.nanoTime() < deadline) {
            ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(200));
            if (!records.isEmpty()) {
                System.out.println("took " + records.count());
                System.out.flush();
                // Dies holding them: no acknowledgement, no close.
                Runtime.getRuntime().halt(0);
            }
        }
        KafkaCheck.fail("got nothing to take");
    }
}
